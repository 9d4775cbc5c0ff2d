import { fileURLToPath } from 'node:url';
import ts from 'typescript';
import { expect, it } from 'vitest';

// The published types as a consumer meets them: test/fixtures/consumer/consumer.ts imports the package by name and
// is compiled against the built dist/ (no skipLibCheck, so the .d.ts files must compile too). Its `@ts-expect-error`
// lines say what must not type-check (`new ControlPlane()`, `new ChunkStream()`, importing internals); an expected
// error that does not happen is itself an error (TS2578), so the compile must come out clean.
it('a consumer compiled against dist/ can use the API and cannot construct what only the client builds', () => {
  const config = fileURLToPath(new URL('./fixtures/consumer/tsconfig.json', import.meta.url));
  const parsed = ts.getParsedCommandLineOfConfigFile(
    config,
    {},
    {
      ...ts.sys,
      onUnRecoverableConfigFileDiagnostic: (diagnostic) => {
        throw new Error(ts.flattenDiagnosticMessageText(diagnostic.messageText, '\n'));
      },
    },
  );
  if (!parsed) throw new Error(`cannot read ${config}`);
  const program = ts.createProgram(parsed.fileNames, parsed.options);
  const diagnostics = ts.getPreEmitDiagnostics(program).map((diagnostic) => {
    const where = diagnostic.file
      ? `${diagnostic.file.fileName}:${diagnostic.file.getLineAndCharacterOfPosition(diagnostic.start ?? 0).line + 1}`
      : '';
    return `${where} TS${diagnostic.code}: ${ts.flattenDiagnosticMessageText(diagnostic.messageText, ' ')}`;
  });
  // The fixture resolved the package to this package's dist/, not to some other copy.
  const resolved = program.getSourceFiles().map((file) => file.fileName);
  expect(resolved).toContain(fileURLToPath(new URL('../dist/index.d.ts', import.meta.url)));
  expect(diagnostics).toEqual([]);
});
