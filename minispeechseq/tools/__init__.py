"""Tools: the programs a user runs, at the top of the import graph (nothing in the package imports them; the
`minispeechseq` command and `python -m minispeechseq` start from `cli.main`).

    cli.py           the `minispeechseq` command: transcribe, inspect, convert, and the programs below by name
    bench.py         speed against transformers, per stage (`python -m minispeechseq.tools.bench`)
    bench_timing.py  the timing rows and the alternation that keeps two libraries' runs comparable
    bench_bounds.py  what a decoding step reads, and the memory-copy bound it is compared with
    bench_int8.py    the int8 rows: kernels, greedy steps, and the bundled model's quality
"""
