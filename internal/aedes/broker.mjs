// Aedes on 127.0.0.1, for the tests: `node broker.mjs PORT`. In-memory persistence (Aedes's
// default), so persistent sessions and their offline queues live as long as this process.
import { createServer } from 'node:net'
import { Aedes } from 'aedes'

const port = Number(process.argv[2])
const broker = await Aedes.createBroker()
const server = createServer(broker.handle)
server.listen(port, '127.0.0.1', () => console.log(`aedes listening on 127.0.0.1:${port}`))
for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => broker.close(() => server.close(() => process.exit(0))))
}
