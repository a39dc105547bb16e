// E2B's JavaScript SDK, unchanged, against sandcell serve (E2B_API_URL, E2B_SANDBOX_URL, E2B_API_KEY).
import assert from 'node:assert/strict'
import { Sandbox } from '@e2b/code-interpreter'

const sbx = await Sandbox.create({ timeoutMs: 60_000, metadata: { sdk: 'js' } })
try {
  const seen = []
  const exec = await sbx.runCode("x = 6\nprint('py says hi')\nx * 7", { onStdout: (m) => seen.push(m.line) })
  assert.equal(exec.text, '42')
  assert.deepEqual(seen, ['py says hi\n'])
  assert.equal((await sbx.runCode('[1, 2, 3].map(n => n * 2)', { language: 'js' })).text, '[ 2, 4, 6 ]')
  assert.equal((await sbx.runCode('1 / 0')).error.name, 'ZeroDivisionError')
  const ctx = await sbx.createCodeContext({ language: 'python', cwd: '/tmp' })
  assert.equal((await sbx.runCode('import os; os.getcwd()', { context: ctx })).text, '/tmp')

  const done = await sbx.commands.run('echo from bash; echo err >&2', { envs: { A: '1' } })
  assert.equal(done.stdout, 'from bash\n')
  assert.equal(done.stderr, 'err\n')
  assert.equal(done.exitCode, 0)
  const bg = await sbx.commands.run('sleep 30', { background: true })
  assert.ok((await sbx.commands.list()).some((p) => p.pid === bg.pid))
  assert.ok(await sbx.commands.kill(bg.pid))

  await sbx.files.write('/home/user/j.txt', 'js content')
  assert.equal(await sbx.files.read('/home/user/j.txt'), 'js content')
  assert.deepEqual((await sbx.files.list('/home/user')).map((e) => e.name), ['j.txt'])
  assert.ok(await sbx.files.exists('/home/user/j.txt'))
  await sbx.files.remove('/home/user/j.txt')
  assert.ok(!(await sbx.files.exists('/home/user/j.txt')))

  const info = await sbx.getInfo()
  assert.equal(info.metadata.sdk, 'js')
  const listed = await Sandbox.list({ query: { metadata: { sdk: 'js' } } }).nextItems()
  assert.deepEqual(listed.map((s) => s.sandboxId), [sbx.sandboxId])
} finally {
  await sbx.kill()
}
assert.ok(!(await sbx.isRunning()))
console.log('ok')
