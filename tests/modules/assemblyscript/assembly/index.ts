// A proxy-wasm module built as the AssemblyScript SDK (@solo-io/proxy-runtime) documents it: its root
// context is registered under a root id ("harness_as"), so the host must pass that root id, and the SDK
// imports WASI as `wasi_unstable`. What it does depends on the request path:
//
//   /deny   answers 403 itself
//   /abort  throws, which the SDK turns into a critical log line and proc_exit(255)
//   other   adds x-test-as-config (the plugin configuration) to the request and x-test-as to the response
//
// Every stream logs its path on request headers, then "on_log" and "on_done" in the order the host calls
// them.
export * from "@solo-io/proxy-runtime/proxy";
import {
  RootContext,
  Context,
  registerRootContext,
  FilterHeadersStatusValues,
  GrpcStatusValues,
  HeaderPair,
  LogLevelValues,
  log,
  send_local_response,
  stream_context,
} from "@solo-io/proxy-runtime";

class HarnessRoot extends RootContext {
  createContext(context_id: u32): Context {
    return new HarnessStream(context_id, this);
  }
}

class HarnessStream extends Context {
  constructor(context_id: u32, root_context: HarnessRoot) {
    super(context_id, root_context);
  }

  onRequestHeaders(headers: u32, end_of_stream: bool): FilterHeadersStatusValues {
    const path = stream_context.headers.request.get(":path");
    log(LogLevelValues.info, "as http on_request_headers " + path);
    if (path == "/deny") {
      const extra = new Array<HeaderPair>();
      send_local_response(403, "as_denied", String.UTF8.encode("denied by the assemblyscript module"), extra, GrpcStatusValues.Unknown);
      return FilterHeadersStatusValues.StopIteration;
    }
    if (path == "/abort") {
      throw new Error("the assemblyscript module aborts");
    }
    stream_context.headers.request.add("x-test-as-config", this.root_context.getConfiguration());
    return FilterHeadersStatusValues.Continue;
  }

  onResponseHeaders(headers: u32, end_of_stream: bool): FilterHeadersStatusValues {
    stream_context.headers.response.add("x-test-as", "response seen");
    return FilterHeadersStatusValues.Continue;
  }

  onLog(): void {
    log(LogLevelValues.info, "as http on_log");
  }

  onDone(): bool {
    log(LogLevelValues.info, "as http on_done");
    return true;
  }
}

registerRootContext((context_id: u32) => {
  return new HarnessRoot(context_id);
}, "harness_as");
