"""What every service shares: the mTLS gRPC server and its health, caller authorisation from
the contract, errors, logs, metrics, traces, configuration, secrets and the database."""
