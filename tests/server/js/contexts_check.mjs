// E2B's JavaScript SDK, unchanged: the default contexts, TypeScript and working directories against sandcell serve.
import assert from 'node:assert/strict'
import { Sandbox } from '@e2b/code-interpreter'

const sbx = await Sandbox.create({ timeoutMs: 60_000 })
try {
  const listed = await sbx.listCodeContexts()
  assert.deepEqual(listed.map((c) => [c.language, c.cwd]), [['python', '/home/user'], ['javascript', '/home/user']])
  await sbx.runCode('const fromListed = 21', { context: listed[1] })
  assert.equal((await sbx.runCode('fromListed * 2', { language: 'javascript' })).text, '42')

  const ts = await sbx.runCode("const message: string = 'Hello, World!'; console.log(message)", { language: 'ts' })
  assert.deepEqual(ts.logs.stdout, ['Hello, World!\n'])
  const ctx = await sbx.createCodeContext({ language: 'typescript', cwd: '/tmp/js-sdk' })
  assert.deepEqual([ctx.language, ctx.cwd], ['typescript', '/tmp/js-sdk'])
  const typed = 'interface P { x: number }\nenum E { A = 2 }\nconst p: P = { x: 40 }\nfunction id<T>(v: T): T { return v }\nid<number>(p.x) + (E.A as number)'
  assert.equal((await sbx.runCode(typed, { context: ctx })).text, '42')
  assert.equal((await sbx.runCode('process.cwd()', { context: ctx })).text, '/tmp/js-sdk')
  const broken = await sbx.runCode('let n: number = ;', { context: ctx })
  assert.deepEqual([broken.error.name, broken.error.value], ['SyntaxError', 'Expression expected (1:16)'])
  const last = (await sbx.listCodeContexts()).at(-1)
  assert.deepEqual([last.id, last.language, last.cwd], [ctx.id, 'typescript', '/tmp/js-sdk'])

  // the SDK keeps only the status of a 400 (the body, our reason, only with its diagnostics on)
  await assert.rejects(sbx.createCodeContext({ language: 'python', cwd: '/root' }), { name: 'SandboxError', message: /^400 Bad Request/ })
} finally {
  await sbx.kill()
}
console.log('ok')
