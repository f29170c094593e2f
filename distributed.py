"""Multi-GPU and multi-node training under torchrun (DistributedDataParallel).

Single-process runs need none of this: every function falls back to world size 1.
Launch: torchrun --nproc_per_node=4 train.py --batch_size=256   (256 clips per process)
"""
import os

import torch
import torch.distributed as dist


def init(device_name):
    """Join the process group when torchrun started us; return (device, rank, world_size)."""
    world_size = int(os.environ.get('WORLD_SIZE', '1'))
    if world_size == 1:
        return None, 0, 1
    use_cuda = torch.cuda.is_available() and device_name != 'cpu'
    if not dist.is_initialized():
        dist.init_process_group('nccl' if use_cuda else 'gloo')
    rank = dist.get_rank()
    device = None
    if use_cuda:
        local_rank = int(os.environ.get('LOCAL_RANK', '0'))
        torch.cuda.set_device(local_rank)
        device = torch.device('cuda', local_rank)
    return device, rank, world_size


def active():
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def is_main():
    return not active() or dist.get_rank() == 0


def barrier():
    if active():
        dist.barrier()


def gather_with_grad(tensor):
    """Concatenate `tensor` from every process in rank order, gradients flowing back to each
    process's own part, so that NT-Xent's negatives span the global batch."""
    if not active():
        return tensor
    import torch.distributed.nn.functional as distributed_functional
    # the group named: the function's default is whichever group existed when it was imported
    return torch.cat(distributed_functional.all_gather(tensor.contiguous(), group=dist.group.WORLD))


def all_gather_tensors(tensor):
    """Every process's `tensor` (the same shape on each), in rank order; [tensor] alone."""
    if not active():
        return [tensor]
    gathered = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, tensor.contiguous())
    return gathered


def all_gather_objects(value):
    """Every process's `value` (any picklable object), in rank order; [value] when alone."""
    if not active():
        return [value]
    values = [None] * dist.get_world_size()
    dist.all_gather_object(values, value)
    return values


def any_process(flag, device):
    """Whether `flag` is true on any process, on every process (a collective: all of them
    must call it at the same point; the host waits for the answer)."""
    if not active():
        return bool(flag)
    value = torch.tensor(float(bool(flag)), device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def all_finite(finite):
    """A boolean device tensor, true only where it is true on every process, so that all
    processes skip the same steps. The host does not wait for the device."""
    if not active():
        return finite
    value = finite.float()
    dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return value.bool()


def broadcast_object(value):
    """Rank 0's value on every process."""
    if not active():
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def shutdown(meet_first=False):
    """Leave the process group. meet_first: every process got here the same way (finished,
    or stopped at the same step), so they wait for each other first; a process that tears its
    connections down while another is still writing a checkpoint can abort (gloo, SIGABRT)."""
    if active():
        if meet_first:
            dist.barrier()
        dist.destroy_process_group()
