"""The gRPC front of RewardService: codec, servicer, and the guard every gRPC service runs behind."""
