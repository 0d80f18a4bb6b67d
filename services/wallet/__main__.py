from services.runtime.server import run_service
from services.wallet.server import build

run_service(build)
