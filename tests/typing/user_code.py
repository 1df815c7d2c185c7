"""User code that mypy must accept, except the two calls marked as errors."""

import cloudq

app = cloudq.App("t")


@cloudq.task
def add(x: int, y: int) -> int:
    return x + y


@app.task(bind=True)
def mul(self: cloudq.Task[..., int], x: int, y: int) -> int:
    return x * y


r = add.delay(1, 2)
value: int = r.get()
add.delay("x", 2)  # error: str where int
mul.delay(1, "y")  # error: str where int (bound task)
