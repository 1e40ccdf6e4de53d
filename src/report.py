"""`python -m src.report <sweep_dir>`: aggregate a sweep into a table and plots."""

from src.evaluation.sweep_report import main

if __name__ == "__main__":
    main()
