"""The HTTP/JSON edge: routes, transcoding, errors and OpenAPI from the gRPC contracts."""
