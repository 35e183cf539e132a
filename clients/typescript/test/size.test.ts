// The core costs at most 8 KB min+gzip on top of socket.io-client; the React and React Native entries carry no
// copy of it (they import only its types).
import { gzipSync } from "node:zlib";
import { build } from "esbuild";
import { expect, it } from "vitest";

async function minGzip(entry: string): Promise<{ bytes: number; text: string }> {
  const result = await build({ entryPoints: [entry], bundle: true, minify: true, write: false, format: "esm",
                               platform: "neutral", target: "es2020", jsx: "automatic",
                               external: ["socket.io-client", "react", "react/jsx-runtime", "react-native"] });
  const text = result.outputFiles[0]!.text;
  return { bytes: gzipSync(text, { level: 9 }).length, text };
}

it("the core is at most 8 KB min+gzip, socket.io-client excluded", async () => {
  const core = await minGzip("src/index.ts");
  console.log(`core: ${core.bytes} bytes min+gzip`);
  expect(core.bytes).toBeLessThanOrEqual(8 * 1024);
  expect(core.text).toContain("socket.io-client"); // imported, not bundled
});

it("the react and react-native entries do not bundle the core", async () => {
  for (const entry of ["src/react/index.ts", "src/react-native/index.ts"]) {
    const { text, bytes } = await minGzip(entry);
    console.log(`${entry}: ${bytes} bytes min+gzip`);
    expect(text).not.toContain("subscribe:property");
    expect(text).not.toContain("socket.io-client");
  }
});
