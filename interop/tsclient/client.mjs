// A host built on the official TypeScript MCP SDK: it starts `mcpmesh stdio`
// (mesh mode), searches the mesh and calls the tool it finds.
//
//   node client.mjs MCPMESH_BINARY HOME QUERY ARGS_JSON [PEER]
//
// With PEER, it calls the hit on that peer.
// Prints one JSON line with what it saw; exits 1 on any failure.
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";

const [binary, home, query, argsJSON, peer] = process.argv.slice(2);
if (!binary || !home || !query) {
  console.error("usage: node client.mjs MCPMESH_BINARY HOME QUERY [ARGS_JSON]");
  process.exit(2);
}

const transport = new StdioClientTransport({ command: binary, args: ["--home", home, "stdio"], stderr: "inherit" });
const client = new Client({ name: "ts-host", version: "1.0.0" });

function text(result) {
  if (result.isError) throw new Error("tool failed: " + JSON.stringify(result.content));
  return result.content.filter((c) => c.type === "text").map((c) => c.text).join("");
}

try {
  await client.connect(transport);
  const { tools } = await client.listTools();
  const names = tools.map((t) => t.name).sort();

  // The mesh may need a moment to learn of the far node: search until found.
  let hits = [];
  for (let i = 0; i < 50 && hits.length === 0; i++) {
    const found = JSON.parse(text(await client.callTool({ name: "mesh_search", arguments: { query } })));
    hits = found.hits.filter((h) => !peer || h.ref.startsWith(peer + "/"));
    if (hits.length === 0) await new Promise((r) => setTimeout(r, 200));
  }
  if (hits.length === 0) throw new Error(`mesh_search found nothing for ${query}`);

  const described = JSON.parse(text(await client.callTool({ name: "mesh_describe", arguments: { ref: hits[0].ref } })));
  const answer = text(await client.callTool({
    name: "mesh_call",
    arguments: { ref: hits[0].ref, arguments: JSON.parse(argsJSON || "{}") },
  }));
  console.log(JSON.stringify({ tools: names, ref: hits[0].ref, schema: described.inputSchema, answer }));
  await client.close();
} catch (err) {
  console.error("ts client:", err?.message ?? err);
  await client.close().catch(() => {});
  process.exit(1);
}
