// `npm run build`: dist/ with ESM (.js), CommonJS (.cjs) and declarations (.d.ts) for each entry point.
// esbuild bundles each entry (dependencies and peers stay imports; the react and react-native entries import
// only types from the core, so an app has one copy of the client); tsc writes the declarations.
import { execFileSync } from "node:child_process";
import { rmSync } from "node:fs";
import { build } from "esbuild";

const entryPoints = { index: "src/index.ts", "react/index": "src/react/index.ts",
                      "react-native/index": "src/react-native/index.ts" };
const common = {
  entryPoints, bundle: true, outdir: "dist", platform: "neutral", target: "es2020", sourcemap: true,
  external: ["socket.io-client", "react", "react/jsx-runtime", "react-native"], jsx: "automatic", logLevel: "warning",
};

rmSync("dist", { recursive: true, force: true });
await build({ ...common, format: "esm" });
await build({ ...common, format: "cjs", outExtension: { ".js": ".cjs" } });
execFileSync(process.execPath, ["node_modules/typescript/bin/tsc", "-p", "tsconfig.build.json"], { stdio: "inherit" });
