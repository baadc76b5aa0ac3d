import torch

# Unit tests use tiny models: one intra-op thread is faster than two for them, and keeps parallel runs fair.
torch.set_num_threads(1)
