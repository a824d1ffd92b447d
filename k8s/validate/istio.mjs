// Validates Istio resources against the schemas of Istio's own CRDs, as compiled into the pinned
// @kubernetes-models/istio package (see package.json), and rejects fields those schemas do not declare.
//
// Input (stdin): a JSON array of {"source": "<where the document came from>", "doc": {...}}.
// Output: one line per document; exit status 1 when any document fails.
//
// The compiled validators check types, enums, patterns and required fields but accept unknown fields, which
// the API server would reject (kubectl's default strict field validation). Unknown fields are found by
// walking the document along the property tree of the package's TypeScript declaration of the same kind.

import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

const MODULE = "@kubernetes-models/istio";
// Object metadata fields a manifest may set; everything else is written by the API server.
const METADATA_FIELDS = new Set(["name", "namespace", "labels", "annotations"]);

/** Reads the whole of stdin as a string. */
function readStdin() {
  return readFileSync(0, "utf8");
}

/**
 * Tokenises a TypeScript declaration: string literals, identifiers and numbers, and single punctuation marks.
 * Comments are dropped first.
 */
function tokenize(text) {
  const source = text.replace(/\/\*[\s\S]*?\*\//g, "").replace(/\/\/[^\n]*/g, "");
  const tokens = [];
  const re = /\s*("(?:[^"\\]|\\.)*"|[A-Za-z_$][\w$]*|-?\d+(?:\.\d+)?|[{}<>\[\]();:?|,=&.])/gy;
  let match;
  while ((match = re.exec(source)) !== null) {
    tokens.push(match[1]);
    if (re.lastIndex >= source.length) break;
  }
  return tokens;
}

/**
 * Parses the body of `export interface I<Kind> { ... }` into a property tree:
 *   {kind: "object", props: Map(name -> tree), open: bool}  (open: an index signature or `{}` accepts any key)
 *   {kind: "array", items: tree}
 *   {kind: "leaf"}                                          (scalars, unions of scalars, named types)
 */
function parseInterface(text, kind) {
  const tokens = tokenize(text);
  let i = tokens.findIndex((t, k) => t === "interface" && tokens[k + 1] === `I${kind}`);
  if (i < 0) throw new Error(`declaration of interface I${kind} not found`);
  i += 2;

  const expect = (token) => {
    if (tokens[i] !== token) throw new Error(`expected ${token} at token ${i}, found ${tokens[i]}`);
    i += 1;
  };

  function parseObject() {
    expect("{");
    const props = new Map();
    let open = false;
    let members = 0;
    while (tokens[i] !== "}") {
      if (tokens[i] === "[") {
        // Index signature: [key: string]: T;
        while (tokens[i] !== "]") i += 1;
        i += 1;
        expect(":");
        parseType();
        open = true;
      } else {
        const name = JSON.parse(tokens[i]);
        i += 1;
        if (tokens[i] === "?") i += 1;
        expect(":");
        props.set(name, parseType());
      }
      if (tokens[i] === ";" || tokens[i] === ",") i += 1;
      members += 1;
    }
    expect("}");
    // `{}` is a free-form object (x-kubernetes-preserve-unknown-fields).
    return { kind: "object", props, open: open || members === 0 };
  }

  function parsePrimary() {
    const token = tokens[i];
    if (token === "{") return parseObject();
    if (token === "(") {
      i += 1;
      const inner = parseType();
      expect(")");
      return inner;
    }
    if (token === "Array" || token === "Exclude") {
      // Array<T> walks as T's items; Exclude<T, U> never adds keys to T, so T's tree accepts all it allows.
      i += 1;
      expect("<");
      const first = parseType();
      while (tokens[i] === ",") {
        i += 1;
        parseType();
      }
      expect(">");
      return token === "Array" ? { kind: "array", items: first } : first;
    }
    i += 1;
    // Named types may carry type arguments or an indexed access; skip them.
    while (tokens[i] === "<" || tokens[i] === "[") {
      let depth = 0;
      do {
        if (tokens[i] === "<" || tokens[i] === "[") depth += 1;
        if (tokens[i] === ">" || tokens[i] === "]") depth -= 1;
        i += 1;
      } while (depth > 0);
    }
    return { kind: "leaf" };
  }

  /** Merges the trees of a union or intersection: a key allowed by any member is allowed. */
  function merge(members) {
    const structured = members.filter((m) => m.kind !== "leaf");
    if (structured.length === 0) return { kind: "leaf" };
    if (structured.every((m) => m.kind === "array")) return { kind: "array", items: merge(structured.map((m) => m.items)) };
    if (!structured.every((m) => m.kind === "object")) return { kind: "object", props: new Map(), open: true };
    const props = new Map();
    let open = false;
    for (const member of structured) {
      open = open || member.open;
      for (const [name, tree] of member.props) props.set(name, props.has(name) ? merge([props.get(name), tree]) : tree);
    }
    return { kind: "object", props, open };
  }

  function parseIntersection() {
    const members = [parsePrimary()];
    while (tokens[i] === "&") {
      i += 1;
      members.push(parsePrimary());
    }
    return members.length === 1 ? members[0] : merge(members);
  }

  function parseType() {
    if (tokens[i] === "|") i += 1;
    const members = [parseIntersection()];
    while (tokens[i] === "|") {
      i += 1;
      members.push(parseIntersection());
    }
    return members.length === 1 ? members[0] : merge(members);
  }

  return parseObject();
}

/** Lists the paths of fields in `value` that `tree` does not declare. */
function unknownFields(value, tree, path, out) {
  if (value === null || value === undefined) return out;
  if (tree.kind === "array" && Array.isArray(value)) {
    value.forEach((item, index) => unknownFields(item, tree.items, `${path}[${index}]`, out));
  } else if (tree.kind === "object" && typeof value === "object" && !Array.isArray(value)) {
    for (const [key, child] of Object.entries(value)) {
      const sub = tree.props.get(key);
      if (sub) unknownFields(child, sub, path ? `${path}.${key}` : key, out);
      else if (!tree.open) out.push(path ? `${path}.${key}` : key);
    }
  }
  return out;
}

async function loadKind(apiVersion, kind) {
  const [group, version] = apiVersion.split("/");
  const specifier = `${MODULE}/${group}/${version}/${kind}`;
  let module;
  try {
    module = await import(specifier);
  } catch (err) {
    throw new Error(`${apiVersion} ${kind} is not an Istio kind known to ${MODULE} (${err.code ?? err.message})`);
  }
  const declaration = fileURLToPath(import.meta.resolve(specifier)).replace(/\.js$/, ".d.ts");
  return { Model: module[kind], tree: parseInterface(readFileSync(declaration, "utf8"), kind) };
}

async function main() {
  const items = JSON.parse(readStdin());
  let failed = 0;
  for (const { source, doc } of items) {
    const label = `${source}: ${doc.kind}/${doc.metadata?.name ?? "<unnamed>"}`;
    const problems = [];
    try {
      const { Model, tree } = await loadKind(doc.apiVersion, doc.kind);
      try {
        new Model(doc).validate();
      } catch (err) {
        problems.push(String(err.message ?? err).replace(/\n/g, "; "));
      }
      const { metadata, ...rest } = doc;
      for (const key of Object.keys(metadata ?? {})) {
        if (!METADATA_FIELDS.has(key)) problems.push(`metadata.${key}: not a field a manifest sets`);
      }
      for (const path of unknownFields(rest, tree, "", [])) {
        problems.push(`${path}: unknown field (not in the ${doc.kind} CRD schema)`);
      }
    } catch (err) {
      problems.push(err.message);
    }
    if (problems.length) {
      failed += 1;
      for (const problem of problems) console.log(`FAIL ${label}: ${problem}`);
    } else {
      console.log(`ok   ${label} (Istio CRD schema)`);
    }
  }
  process.exit(failed ? 1 : 0);
}

main().catch((err) => {
  console.error(`istio.mjs: ${err.stack ?? err}`);
  process.exit(2);
});
