"""Write a 1 GiB output file."""
block = b"\0" * (1 << 20)
with open("/work/out/huge.bin", "wb") as f:
    for _ in range(1024):
        f.write(block)
