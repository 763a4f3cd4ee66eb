"""Loads that saturate an asyncio loop, for test_fairness.py and the GTK
child of test_gtk.py: stream connections echoing 1 KiB as fast as they can,
optionally with a task making bursts of 1000 tasks and one connection whose
server writes 64 KiB blocks as fast as they are read."""
import asyncio


class Saturation:
    def __init__(self, connections=100, bursts=False, pour=False):
        self.connections = connections
        self.bursts = bursts
        self.pour = pour
        self.trips = self.burst_tasks = self.bytes_read = 0
        self.running = True
        self.tasks = []
        self.servers = []

    async def start(self):
        async def echo(reader, writer):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
            writer.close()

        async def pour(reader, writer):
            block = b"d" * 65536
            try:
                while self.running:
                    writer.write(block)
                    await writer.drain()
            except ConnectionError:
                pass  # the drinker was cancelled and hung up
            finally:
                writer.close()

        async def client(addr):
            reader, writer = await asyncio.open_connection(*addr)
            while self.running:
                writer.write(b"x" * 1024)
                await reader.readexactly(1024)
                self.trips += 1
            writer.close()
            await writer.wait_closed()

        async def drink(addr):
            reader, writer = await asyncio.open_connection(*addr)
            try:
                while self.running:
                    self.bytes_read += len(await reader.read(65536))
            finally:
                # also when cancelled: from 3.12 on the server's
                # wait_closed() waits for its connections to close
                writer.close()

        async def one():
            await asyncio.sleep(0)
            self.burst_tasks += 1

        async def bursts():
            while self.running:
                await asyncio.gather(*(one() for _ in range(1000)))

        self.servers.append(await asyncio.start_server(echo, "127.0.0.1", 0))
        addr = self.servers[0].sockets[0].getsockname()
        self.tasks = [asyncio.create_task(client(addr)) for _ in range(self.connections)]
        if self.pour:
            self.servers.append(await asyncio.start_server(pour, "127.0.0.1", 0))
            self.tasks.append(asyncio.create_task(
                drink(self.servers[1].sockets[0].getsockname())))
        if self.bursts:
            self.tasks.append(asyncio.create_task(bursts()))
        while self.trips < self.connections:
            await asyncio.sleep(0.01)

    async def stop(self):
        self.running = False
        # the pouring server and the bursts only stop when cancelled
        for task in self.tasks[self.connections:]:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for server in self.servers:
            server.close()
            await server.wait_closed()
