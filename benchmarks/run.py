"""`make bench`: run the benchmarks and write benchmarks/results.md."""

from __future__ import annotations


def main() -> None:
    print("no benchmarks yet")


if __name__ == "__main__":
    main()
