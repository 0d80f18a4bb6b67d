"""The games service: the platform's own RNG games. ``services.games.math`` holds each game's
pure math (outcome mapping, payouts, exact RTP); sessions and round lifecycle build on it."""
