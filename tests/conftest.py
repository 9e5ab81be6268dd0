
import torch

# The test models are tiny: one thread avoids the synchronisation cost that dominates at this size.
torch.set_num_threads(1)
