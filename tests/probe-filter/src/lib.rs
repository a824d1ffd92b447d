//! Probe filter: a proxy-wasm module with no business logic that makes host calls on demand, so the
//! harness and Envoy can be compared call by call.
//!
//! Its configuration lists operations per callback (see [`plan`]). Each operation is one host call; its
//! result is rendered as one line of printable ASCII (see [`outcome`]), logged at info as
//! `probe <root|http> <callback>#<n> <op>: <result>`, and kept in the context's journal, which the
//! `emit_results` operation writes into a header map (`x-probe-<n>`) and `send_local_response` can
//! send as a body. The probe never panics on a status the SDK accepts: every one is rendered.
//!
//! Layout:
//! - [`plan`]: the configuration format, parsed and checked field by field.
//! - [`outcome`]: how results render.
//! - [`probe`]: runs a callback's operations against the host.
//! - `raw`: the one host call made without the SDK, so every status it returns is observable.

pub mod outcome;
pub mod plan;
pub mod probe;
mod raw;

use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType};

use crate::plan::{Plan, Step};
use crate::probe::{Args, Callback, Effects, Invocations, Scope, Vm};

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| Box::new(ProbeRoot::default()));
}}

/// The root context: runs the VM-level callbacks and creates HTTP contexts sharing its [`Vm`].
#[derive(Default)]
struct ProbeRoot {
    vm: Rc<Vm>,
    invocations: Invocations,
}

impl ProbeRoot {
    fn run(&mut self, name: &'static str, args: Args, steps: &[Step]) -> Effects {
        // The journal lives in the shared VM state so HTTP contexts can emit it; it is taken out for the
        // run so that no borrow is held while host calls are made.
        let mut journal = std::mem::take(&mut *self.vm.root_journal.borrow_mut());
        let effects = Callback {
            scope: Scope::Root,
            name,
            args,
            vm: &self.vm,
            journal: &mut journal,
            invocations: &mut self.invocations,
        }
        .run(steps);
        *self.vm.root_journal.borrow_mut() = journal;
        effects
    }

    /// Reads and parses a configuration buffer; an error is logged and reported as `None`.
    fn read_plan(buffer: BufferType, what: &str) -> Option<Plan> {
        let bytes = match proxy_wasm::hostcalls::get_buffer(buffer, 0, usize::MAX) {
            Ok(bytes) => bytes.unwrap_or_default(),
            Err(status) => {
                probe::log_probe_error(&format!(
                    "reading the {what}: {}",
                    outcome::status_name(status)
                ));
                return None;
            }
        };
        match Plan::parse(&bytes) {
            Ok(plan) => Some(plan),
            Err(err) => {
                probe::log_probe_error(&format!("{what}: {err}"));
                None
            }
        }
    }
}

impl Context for ProbeRoot {
    fn on_http_call_response(
        &mut self,
        _token_id: u32,
        headers: usize,
        body_size: usize,
        trailers: usize,
    ) {
        let plan = self.vm.plan();
        self.run(
            "on_http_call_response",
            Args::HttpCallResponse {
                headers,
                body_size,
                trailers,
            },
            &plan.on_http_call_response,
        );
    }
}

impl RootContext for ProbeRoot {
    fn on_vm_start(&mut self, vm_configuration_size: usize) -> bool {
        let Some(plan) = Self::read_plan(BufferType::VmConfiguration, "vm configuration") else {
            return false;
        };
        !self
            .run(
                "on_vm_start",
                Args::Configuration {
                    size: vm_configuration_size,
                },
                &plan.on_vm_start,
            )
            .reject
    }

    fn on_configure(&mut self, plugin_configuration_size: usize) -> bool {
        let Some(plan) = Self::read_plan(BufferType::PluginConfiguration, "plugin configuration")
        else {
            return false;
        };
        let plan = Rc::new(plan);
        *self.vm.plan.borrow_mut() = Rc::clone(&plan);
        !self
            .run(
                "on_configure",
                Args::Configuration {
                    size: plugin_configuration_size,
                },
                &plan.on_configure,
            )
            .reject
    }

    fn on_tick(&mut self) {
        let plan = self.vm.plan();
        self.run("on_tick", Args::None, &plan.on_tick);
    }

    fn on_queue_ready(&mut self, queue_id: u32) {
        let plan = self.vm.plan();
        self.run(
            "on_queue_ready",
            Args::QueueReady { queue_id },
            &plan.on_queue_ready,
        );
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(ProbeHttp {
            vm: Rc::clone(&self.vm),
            journal: Vec::new(),
            invocations: Invocations::default(),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// One HTTP stream: runs the stream callbacks with its own journal.
struct ProbeHttp {
    vm: Rc<Vm>,
    journal: Vec<String>,
    invocations: Invocations,
}

impl ProbeHttp {
    fn run(&mut self, name: &'static str, args: Args, select: fn(&Plan) -> &[Step]) -> Effects {
        let plan = self.vm.plan();
        Callback {
            scope: Scope::Http,
            name,
            args,
            vm: &self.vm,
            journal: &mut self.journal,
            invocations: &mut self.invocations,
        }
        .run(select(&plan))
    }

    fn action(&mut self, name: &'static str, args: Args, select: fn(&Plan) -> &[Step]) -> Action {
        if self.run(name, args, select).pause {
            Action::Pause
        } else {
            Action::Continue
        }
    }
}

impl Context for ProbeHttp {
    fn on_http_call_response(
        &mut self,
        _token_id: u32,
        headers: usize,
        body_size: usize,
        trailers: usize,
    ) {
        self.run(
            "on_http_call_response",
            Args::HttpCallResponse {
                headers,
                body_size,
                trailers,
            },
            |plan| &plan.on_http_call_response,
        );
    }

    fn on_done(&mut self) -> bool {
        self.run("on_done", Args::None, |plan| &plan.on_done);
        true
    }
}

impl HttpContext for ProbeHttp {
    fn on_http_request_headers(&mut self, count: usize, end_of_stream: bool) -> Action {
        self.action(
            "on_request_headers",
            Args::Headers {
                count,
                end_of_stream,
            },
            |plan| &plan.on_request_headers,
        )
    }

    fn on_http_request_body(&mut self, size: usize, end_of_stream: bool) -> Action {
        self.action(
            "on_request_body",
            Args::Body {
                size,
                end_of_stream,
            },
            |plan| &plan.on_request_body,
        )
    }

    fn on_http_response_headers(&mut self, count: usize, end_of_stream: bool) -> Action {
        self.action(
            "on_response_headers",
            Args::Headers {
                count,
                end_of_stream,
            },
            |plan| &plan.on_response_headers,
        )
    }

    fn on_http_response_body(&mut self, size: usize, end_of_stream: bool) -> Action {
        self.action(
            "on_response_body",
            Args::Body {
                size,
                end_of_stream,
            },
            |plan| &plan.on_response_body,
        )
    }

    fn on_log(&mut self) {
        self.run("on_log", Args::None, |plan| &plan.on_log);
    }
}
