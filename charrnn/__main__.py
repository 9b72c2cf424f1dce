"""`python -m charrnn` (and `torchrun -m charrnn train ...`)."""

from .cli import main

if __name__ == "__main__":
    main(prog_name="charrnn")
