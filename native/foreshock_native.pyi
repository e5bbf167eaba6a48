"""Foreshock's native scanner (see `foreshock.native`)."""

def route_hash(key: str) -> int:
    """The hash Bytewax routes the state key `key` by."""

def key_routed_to(name: str, residue: int, modulus: int) -> str:
    """A key from `name` that Bytewax keeps on worker `residue % workers`
    whenever `workers` divides `modulus`."""

class Scanner:
    """Native JSON telemetry to window tallies, for one window spec."""

    def __init__(
        self, description: str, align_us: int, slide_us: int, length_us: int
    ) -> None: ...
    def scan(
        self,
        values: list[bytes | None],
        timestamps: list[int | None],
        start: int,
        first: int,
        closed_any: bool,
        max_us: int,
        close_at_us: int,
        ahead_us: int | None,
        behind_us: int | None,
        max_bytes: int | None,
    ) -> tuple[
        int,
        int,
        int,
        int,
        int | None,
        list[
            tuple[
                int,
                int,
                str,
                str,
                str,
                int,
                dict[str, int],
                dict[str, list[float]],
                dict[str, int],
                dict[str, int],
            ]
        ],
    ]: ...
