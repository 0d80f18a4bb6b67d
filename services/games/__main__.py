from services.games.server import build
from services.runtime.server import run_service

run_service(build)
