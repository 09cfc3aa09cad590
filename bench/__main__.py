from bench.cli import main

if __name__ == "__main__":  # guarded: a spawned worker process imports this module again
    raise SystemExit(main())
