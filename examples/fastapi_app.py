"""FastAPI and pgjobs: an endpoint writes a row and enqueues a job in one transaction; a worker runs the job's
async task.

    pip install pgjobs fastapi uvicorn
    export PGJOBS_DATABASE_URL=postgresql://localhost/app
    pgjobs migrate
    uvicorn examples.fastapi_app:app                   # the API
    pgjobs worker --import examples.fastapi_app        # a worker: runs example.send_receipt on its event loop

POST /orders {"item": "book", "quantity": 2} inserts the order and enqueues `example.send_receipt` in the
request's transaction: if the request fails after the enqueue (here: quantity 0), both are rolled back, so no
receipt is ever sent for an order that does not exist.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, HTTPException
from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel

import pgjobs

SCHEMA = """CREATE TABLE IF NOT EXISTS example_orders (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    item text NOT NULL,
    quantity int NOT NULL,
    receipt_sent_at timestamptz)"""


@pgjobs.task("example.send_receipt", pass_context=True, max_attempts=5, timeout=30)
async def send_receipt(ctx: pgjobs.JobContext, order_id: int) -> dict[str, Any]:
    """Mark the order's receipt sent (a real app would call its mail service here, with `await`)."""
    async with ctx.aconnection() as conn:  # statement_timeout = the job's remaining time
        cur = await conn.execute("UPDATE example_orders SET receipt_sent_at = now() WHERE id = %s RETURNING item",
                                 (order_id,))
        row = await cur.fetchone()
    await asyncio.sleep(0.01)  # stands for the HTTP call to the mail service
    return {"order_id": order_id, "item": row[0] if row else None}


class Order(BaseModel):
    item: str
    quantity: int


_pool: AsyncConnectionPool | None = None


@asynccontextmanager
async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
    global _pool
    url = os.environ.get("PGJOBS_DATABASE_URL") or os.environ["DATABASE_URL"]
    _pool = AsyncConnectionPool(url, min_size=1, max_size=10, open=False)
    await _pool.open()
    async with _pool.connection() as conn:
        await conn.execute(SCHEMA)
    yield
    await _pool.close()


app = FastAPI(title="pgjobs example", lifespan=lifespan)


@app.post("/orders")
async def create_order(order: Order) -> dict[str, int]:
    assert _pool is not None
    async with _pool.connection() as conn, conn.transaction():
        cur = await conn.execute("INSERT INTO example_orders (item, quantity) VALUES (%s, %s) RETURNING id",
                                 (order.item, order.quantity))
        order_id = (await cur.fetchone())[0]
        job_id = await pgjobs.enqueue_async("example.send_receipt", {"order_id": order_id}, conn=conn)
        if order.quantity <= 0:  # a failure after the enqueue: the order and its job roll back together
            raise HTTPException(status_code=422, detail="quantity must be positive")
    return {"order_id": order_id, "job_id": job_id}
