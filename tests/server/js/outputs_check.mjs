// E2B's JavaScript SDK, unchanged, against sandcell serve: outputs as E2B gives them.
// Reads the chart cases ([{name, cell}]) on stdin; prints each case's chart as JSON, by name.
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { Sandbox } from '@e2b/code-interpreter'

const cases = JSON.parse(readFileSync(0, 'utf8'))
const sbx = await Sandbox.create({ timeoutMs: 120_000 })
const charts = {}
try {
  for (const { name, cell } of cases) {
    const figures = (await sbx.runCode(cell)).results.filter((r) => r.png)
    assert.equal(figures.length, 1, name)
    charts[name] = figures[0].chart
  }
  const main = async (code, opts) => (await sbx.runCode(code, opts)).results.find((r) => r.isMainResult)
  const frame = await main("import pandas as pd\npd.DataFrame({'n': [1, 2], 'when': pd.to_datetime(['2024-01-02 00:00:00', '2024-03-04 05:06:07'])})")
  assert.deepEqual(frame.data, { n: [1, 2], when: ['2024-01-02T00:00:00', '2024-03-04T05:06:07'] })
  assert.deepEqual((await main("import numpy as np\n{1: np.int64(3), 'array': np.arange(3)}")).json, { 1: 3, array: [0, 1, 2] })
  assert.equal((await main("import os\nos.getenv('X')", { envs: { X: 'supertest' } })).text, 'supertest')
  assert.equal((await main("await Promise.resolve('Hello World!')", { language: 'js' })).text, 'Hello World!')
  const image = "from PIL import Image\nimage = Image.new('RGB', (6, 4), 'teal')\n"
  for (const cell of ['image.show()', 'image', "image.save('/home/user/saved.png')"]) {
    const results = (await sbx.runCode(image + cell)).results
    assert.equal(results.length, 1, cell)
    assert.ok(Buffer.from(results[0].png, 'base64').subarray(0, 4).equals(Buffer.from([0x89, 0x50, 0x4e, 0x47])), cell)
  }
} finally {
  await sbx.kill()
}

const doomed = await Sandbox.create({ timeoutMs: 60_000 })
await doomed.setTimeout(2_000)
await assert.rejects(doomed.runCode('import time\ntime.sleep(60)'), /killed while the request was in progress/)

console.log(JSON.stringify(charts))
