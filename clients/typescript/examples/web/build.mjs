// Bundles the example page into one app.js, one app.css and index.html, by default into the Python package
// (blocks_rt/web/, served by `blocks-rt demo --web`): `node build.mjs [outdir]`.
//
// The bundle is committed, and a test rebuilds it into a temporary folder and compares bytes, so the build is
// deterministic: esbuild pinned in package-lock.json, no timestamps, no absolute paths in the output, the same
// options every time. The package comes from its sources (../../src), not from a dist/ that a fresh clone does
// not have, and every package the bundle uses is resolved from this folder's node_modules, never from
// ../../node_modules (which may hold other versions, or not exist).
import { copyFile, mkdir } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import * as esbuild from "esbuild";

const here = path.dirname(fileURLToPath(import.meta.url));
const packageSrc = path.resolve(here, "../../src");
const outdir = path.resolve(process.argv[2] ?? path.resolve(here, "../../../../blocks_rt/web"));

const entries = {
  "@blocks-rt/client": path.join(packageSrc, "index.ts"),
  "@blocks-rt/client/react": path.join(packageSrc, "react/index.ts"),
};

const fromHere = {
  name: "resolve-from-the-example",
  setup(build) {
    build.onResolve({ filter: /^@blocks-rt\/client(\/react)?$/ }, (args) => ({ path: entries[args.path] }));
    // a bare import in the package's sources resolves as if it were written here
    build.onResolve({ filter: /^[^./]/ }, (args) =>
      (args.resolveDir + path.sep).startsWith(packageSrc + path.sep)
        ? build.resolve(args.path, { kind: args.kind, resolveDir: here })
        : undefined,
    );
  },
};

await mkdir(outdir, { recursive: true });
await esbuild.build({
  absWorkingDir: here,
  entryPoints: { app: "src/main.tsx" },
  outdir,
  bundle: true,
  format: "iife",
  target: "es2020",
  platform: "browser",
  minify: true,
  legalComments: "eof",
  charset: "utf8",
  jsx: "automatic",
  define: { "process.env.NODE_ENV": '"production"' },
  plugins: [fromHere],
  logLevel: "warning",
});
await copyFile(path.join(here, "index.html"), path.join(outdir, "index.html"));
