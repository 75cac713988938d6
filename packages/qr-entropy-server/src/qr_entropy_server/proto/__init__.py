"""Generated protobuf and gRPC modules for ``qr_entropy.EntropyService``.

Produced by ``hatch run protos:generate`` from
``protos/qr_entropy_server/proto/entropy_service.proto``; never edit by hand.
"""
