import os
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.optim as optim
from torch.utils.data import DataLoader, Dataset
from torchvision import datasets, transforms

def setup(rank, world_size):
    os.environ['MASTER_ADDR'] = 'localhost'
    os.environ['MASTER_PORT'] = '12355'

    # initialize the process group
    dist.init_process_group("gloo", rank=rank, world_size=world_size)

def cleanup():
    dist.destroy_process_group()

class ToyDataset(Dataset):
    def __init__(self, size, transform=None):
        self.size = size
        self.transform = transform

    def __len__(self):
        return self.size

    def __getitem__(self, idx):
        data = torch.randn(3)
        target = torch.randint(0, 2, (1,))
        if self.transform:
            data = self.transform(data)
        return data, target

def train(rank, world_size):
    setup(rank, world_size)

    dataset = ToyDataset(size=1000, transform=transforms.ToTensor())
    dataloader = DataLoader(dataset, batch_size=10, shuffle=True)

    model = nn.Linear(3, 1).to(rank)
    ddp_model = nn.parallel.DistributedDataParallel(model, device_ids=[rank])

    loss_fn = nn.BCEWithLogitsLoss()
    optimizer = optim.SGD(ddp_model.parameters(), lr=0.001)

    for epoch in range(10):
        for batch in dataloader:
            data, target = batch
            data, target = data.to(rank), target.to(rank)
            optimizer.zero_grad()
            output = ddp_model(data)
            loss = loss_fn(output, target.float())
            loss.backward()
            optimizer.step()

    cleanup()

def main():
    world_size = torch.cuda.device_count()
    processes = []
    for rank in range(world_size):
        p = Process(target=train, args=(rank, world_size))
        p.start()
        processes.append(p)
    for p in processes:
        p.join()

if __name__ == "__main__":
    main()
