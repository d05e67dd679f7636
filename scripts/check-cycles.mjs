#!/usr/bin/env node
// Fails (exit 1) on any import cycle under src/: among files, and among src/'s top-level folders
// (every file collapsed to the folder it sits in directly under src/, e.g. src/eval/x.ts → "eval").
// A folder cycle means two layers depend on each other even when no single file cycle exists;
// docs/ARCHITECTURE.md gives the intended direction. Type-only and dynamic imports count: they
// couple modules as much as value imports do.
//
//   node scripts/check-cycles.mjs            check src/ (madge parses it)
//   node scripts/check-cycles.mjs --json     one JSON object { files, folders } on stdout
//   node scripts/check-cycles.mjs --graph G  check a madge --json style graph read from file G
//                                           ({ "a/x.ts": ["b/y.ts"], … }, paths relative to src/)
import { readFileSync } from "node:fs";
import Module, { createRequire } from "node:module";
import { pathToFileURL } from "node:url";

const require = createRequire(import.meta.url);

/** The file graph of src/ as madge sees it: { "eval/evaluate.ts": ["train/events.ts", …] }. */
async function madgeGraph() {
  // madge parses and resolves TypeScript with the TypeScript 5 compiler API; the project's own
  // `typescript` (7, the native compiler) has no JS API, so the 5.x copy installed under the alias
  // typescript-for-madge answers madge's `require("typescript")`.
  const resolve = Module._resolveFilename;
  Module._resolveFilename = function (request, ...rest) {
    if (request === "typescript" || request.startsWith("typescript/")) {
      request = request.replace(/^typescript/, "typescript-for-madge");
    }
    return resolve.call(this, request, ...rest);
  };
  const madge = require("madge");
  const result = await madge("src", {
    fileExtensions: ["ts"],
    tsConfig: "tsconfig.json",
    detectiveOptions: { ts: { skipTypeImports: false, skipAsyncImports: false } },
  });
  return result.obj();
}

/** Every elementary cycle is too many to list; one cycle per strongly connected component is
 * enough to act on. Returns each component of two or more nodes, with one cycle through it. */
export function cyclesOf(graph) {
  const index = new Map();
  const low = new Map();
  const onStack = new Set();
  const stack = [];
  const components = [];
  let next = 0;
  const visit = (node) => {
    index.set(node, next);
    low.set(node, next);
    next += 1;
    stack.push(node);
    onStack.add(node);
    for (const dep of graph[node] ?? []) {
      if (!index.has(dep)) {
        visit(dep);
        low.set(node, Math.min(low.get(node), low.get(dep)));
      } else if (onStack.has(dep)) {
        low.set(node, Math.min(low.get(node), index.get(dep)));
      }
    }
    if (low.get(node) === index.get(node)) {
      const component = [];
      let member;
      do {
        member = stack.pop();
        onStack.delete(member);
        component.push(member);
      } while (member !== node);
      if (component.length > 1 || (graph[node] ?? []).includes(node)) components.push(component.sort());
    }
  };
  for (const node of Object.keys(graph).sort()) if (!index.has(node)) visit(node);
  return components.map((members) => ({ members, cycle: cycleWithin(graph, members) }));
}

/** A shortest cycle through the component's first member, staying inside the component. */
function cycleWithin(graph, members) {
  const inside = new Set(members);
  const start = members[0];
  const previous = new Map([[start, null]]);
  const queue = [start];
  while (queue.length > 0) {
    const node = queue.shift();
    for (const dep of graph[node] ?? []) {
      if (!inside.has(dep)) continue;
      if (dep === start) {
        const path = [node];
        for (let at = previous.get(node); at !== null; at = previous.get(at)) path.push(at);
        return [...path.reverse(), start];
      }
      if (!previous.has(dep)) {
        previous.set(dep, node);
        queue.push(dep);
      }
    }
  }
  return [start];
}

/** "eval/evaluate.ts" → "eval"; a file directly in src/ (index.ts) stands for itself. */
export function folderOf(file) {
  const slash = file.indexOf("/");
  return slash < 0 ? file : file.slice(0, slash);
}

/** The folder graph, and for each folder edge the file imports that make it. */
export function folderGraph(fileGraph) {
  const graph = {};
  const because = {};
  for (const [file, deps] of Object.entries(fileGraph)) {
    const from = folderOf(file);
    graph[from] ??= [];
    for (const dep of deps) {
      const to = folderOf(dep);
      if (to === from) continue;
      if (!graph[from].includes(to)) graph[from].push(to);
      (because[`${from} -> ${to}`] ??= []).push(`${file} -> ${dep}`);
    }
  }
  return { graph, because };
}

export function check(fileGraph) {
  const files = cyclesOf(fileGraph).map((c) => c.cycle);
  const { graph, because } = folderGraph(fileGraph);
  const folders = cyclesOf(graph).map(({ members, cycle }) => {
    const edges = {};
    for (let i = 0; i + 1 < cycle.length; i++) {
      const key = `${cycle[i]} -> ${cycle[i + 1]}`;
      edges[key] = because[key] ?? [];
    }
    return { members, cycle, edges };
  });
  return { fileCount: Object.keys(fileGraph).length, files, folders };
}

async function main(argv) {
  const graphAt = argv.indexOf("--graph");
  const fileGraph =
    graphAt >= 0 ? JSON.parse(readFileSync(argv[graphAt + 1], "utf8")) : await madgeGraph();
  const result = check(fileGraph);
  if (argv.includes("--json")) {
    process.stdout.write(`${JSON.stringify(result)}\n`);
  } else {
    const lines = [`${result.fileCount} files under src/`];
    lines.push(
      result.files.length === 0
        ? "no file cycles"
        : `${result.files.length} file cycle(s):`,
      ...result.files.map((cycle, i) => `  ${i + 1}) ${cycle.join(" > ")}`),
    );
    lines.push(
      result.folders.length === 0
        ? "no folder cycles"
        : `${result.folders.length} folder cycle(s):`,
    );
    for (const [i, { members, cycle, edges }] of result.folders.entries()) {
      const rest = members.filter((m) => !cycle.includes(m));
      lines.push(`  ${i + 1}) ${cycle.join(" > ")}${rest.length > 0 ? ` (the same knot also holds ${rest.join(", ")})` : ""}`);
      for (const [edge, imports] of Object.entries(edges)) {
        lines.push(`     ${edge}: ${imports.slice(0, 4).join(", ")}${imports.length > 4 ? `, … (${imports.length})` : ""}`);
      }
    }
    process.stdout.write(`${lines.join("\n")}\n`);
  }
  process.exitCode = result.files.length + result.folders.length > 0 ? 1 : 0;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  await main(process.argv.slice(2));
}
