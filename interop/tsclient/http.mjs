// A host built on the official TypeScript MCP SDK 2.x (@modelcontextprotocol/client):
// it connects to the gateway's mesh mode over Streamable HTTP, on the
// protocol version asked for, lists the tools, and calls one tool through
// mesh_call with progress.
//
//   node http.mjs URL MODE REF [ARGS_JSON]
//
// MODE is "legacy" (the 2025 initialize handshake) or "modern" (pinned to
// 2026-07-28: server/discover, no sessions). Prints one JSON line with what
// it saw; exits 1 on any failure.
import { Client, StreamableHTTPClientTransport } from "@modelcontextprotocol/client";

const [url, mode, ref, argsJSON] = process.argv.slice(2);
if (!url || !["legacy", "modern"].includes(mode) || !ref) {
  console.error("usage: node http.mjs URL legacy|modern REF [ARGS_JSON]");
  process.exit(2);
}

const client = new Client(
  { name: "ts-http-host", version: "1.0.0" },
  { versionNegotiation: { mode: mode === "modern" ? { pin: "2026-07-28" } : "legacy" } },
);

try {
  await client.connect(new StreamableHTTPClientTransport(new URL(url)));
  const { tools } = await client.listTools();
  const progress = [];
  const result = await client.callTool(
    { name: "mesh_call", arguments: { ref, arguments: JSON.parse(argsJSON || "{}") } },
    { onprogress: (p) => progress.push(p.progress) },
  );
  if (result.isError) throw new Error("mesh_call failed: " + JSON.stringify(result.content));
  const answer = result.content.filter((c) => c.type === "text").map((c) => c.text).join("");
  console.log(JSON.stringify({
    version: client.getNegotiatedProtocolVersion(),
    server: client.getServerVersion()?.name,
    tools: tools.map((t) => t.name).sort(),
    answer,
    progress,
  }));
  await client.close();
} catch (err) {
  console.error("ts http client:", err?.message ?? err);
  await client.close().catch(() => {});
  process.exit(1);
}
