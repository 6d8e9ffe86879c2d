//! Functions and calls: what the client creates (`FunctionPrecreate`,
//! `FunctionCreate`), looks up (`FunctionGet`) and calls (`FunctionMap`,
//! `FunctionPutInputs`, `FunctionGetOutputs`), and the container side of a
//! call (`FunctionGetInputs`, `FunctionPutOutputs`, `TaskResult`).
//!
//! An input waits in its function's queue until a container takes it; its
//! output goes to its call, where the client reads it with a cursor (the
//! entry id of the last output it saw). Inputs are never retried: a
//! container that fails, times out or ends mid-input fails that input, with
//! the status Modal's client turns into the matching exception.

use std::time::{Duration, Instant};

use latchkey_core::{ids, Error};
use latchkey_proto::api::{self, generic_result::GenericStatus};
use latchkey_service::{Caller, Role};

use crate::{
    containers::StopReason, echo, handle_metadata, now_secs, refuse, Func, Functions, State,
    MAX_CALLS, MAX_INPUTS, MAX_POLL,
};

/// How long a container's `FunctionGetInputs` waits before answering with
/// nothing (it asks again at once).
const INPUT_POLL: Duration = Duration::from_secs(20);
/// Default timeout of an input (Modal's).
const DEFAULT_TIMEOUT_SECS: u32 = 300;

/// A call: one `.remote()` or one `.map()`.
pub(crate) struct Call {
    pub(crate) id: String,
    pub(crate) function_id: String,
    pub(crate) workspace_id: String,
    /// Entry id → output, in entry order.
    pub(crate) outputs: Vec<(u64, api::FunctionGetOutputsItem)>,
    next_entry: u64,
    /// Inputs without an output yet.
    pub(crate) unfinished: usize,
}

/// An input, waiting or running.
pub(crate) struct Input {
    pub(crate) call_id: String,
    pub(crate) function_id: String,
    pub(crate) idx: i32,
    pub(crate) input: api::FunctionInput,
    pub(crate) invocation_type: i32,
    /// The task running it.
    pub(crate) task: Option<String>,
    pub(crate) started_at: f64,
}

/// A failure result with `message`; `internal` marks the server's side
/// (the client raises `InternalFailure`), else the function's
/// (`RemoteError`).
pub(crate) fn failure(message: &str, internal: bool) -> api::GenericResult {
    api::GenericResult {
        status: if internal {
            GenericStatus::InternalFailure
        } else {
            GenericStatus::Failure
        } as i32,
        exception: message.to_owned(),
        ..Default::default()
    }
}

/// Records the output of input `input_id` (which leaves the server's
/// inputs), for its call.
pub(crate) fn complete(
    state: &mut State,
    input_id: &str,
    result: api::GenericResult,
    data_format: i32,
    task_id: &str,
) {
    let Some(input) = state.inputs.remove(input_id) else {
        return;
    };
    if let Some(task) = input.task.as_ref().and_then(|t| state.tasks.get_mut(t)) {
        task.inputs.retain(|i| i != input_id);
    }
    if let Some(f) = state.functions.get_mut(&input.function_id) {
        f.queue.retain(|i| i != input_id);
    }
    let Some(call) = state.calls.get_mut(&input.call_id) else {
        return;
    };
    let entry = call.next_entry;
    call.next_entry += 1;
    call.unfinished = call.unfinished.saturating_sub(1);
    call.outputs.push((
        entry,
        api::FunctionGetOutputsItem {
            result: Some(result),
            idx: input.idx,
            input_id: input_id.to_owned(),
            data_format,
            task_id: task_id.to_owned(),
            input_started_at: input.started_at,
            output_created_at: now_secs(),
            retry_count: 0,
            ..Default::default()
        },
    ));
}

/// Fails every input waiting in `function_id`'s queue with `result`.
pub(crate) fn fail_queued(state: &mut State, function_id: &str, result: &api::GenericResult) {
    let queued: Vec<String> = state
        .functions
        .get_mut(function_id)
        .map(|f| f.queue.drain(..).collect())
        .unwrap_or_default();
    for input_id in queued {
        complete(state, &input_id, result.clone(), 0, "");
    }
}

/// Parses a cursor: our entry ids are integers; Modal's start is `0-0`.
fn parse_cursor(text: &str) -> u64 {
    text.split('-')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

impl Functions {
    /// The function `function_id` as the caller may see it, with its app.
    fn function_of<'a>(
        state: &'a State,
        caller: &Caller,
        function_id: &str,
    ) -> Result<&'a Func, Error> {
        let f = state.functions.get(function_id).ok_or_else(|| {
            Error::not_found(format!("Function '{}' not found", echo(function_id)))
        })?;
        Self::app_of(state, caller, &f.app_id)
            .map_err(|_| Error::not_found(format!("Function '{}' not found", echo(function_id))))?;
        Ok(f)
    }

    /// `FunctionPrecreate`: an id for a function before its definition.
    pub fn function_precreate(
        &self,
        caller: &Caller,
        req: &api::FunctionPrecreateRequest,
    ) -> Result<api::FunctionPrecreateResponse, Error> {
        caller.require(Role::Developer, "create functions")?;
        refuse::check_precreate(req)?;
        if req.function_name.is_empty() || req.function_name.len() > 256 {
            return Err(Error::invalid(
                "A function needs a name of at most 256 characters",
            ));
        }
        let mut state = self.state();
        let app = Self::app_of(&state, caller, &req.app_id)?;
        if !app.running() {
            return Err(Error::failed_precondition(format!(
                "App {} is stopped",
                app.id
            )));
        }
        let existing = state
            .functions
            .values()
            .find(|f| {
                f.app_id == req.app_id
                    && (f.id == req.existing_function_id || f.tag == req.function_name)
            })
            .map(|f| f.id.clone());
        let id = match existing {
            Some(id) => id,
            None => {
                let id = ids::new_id("fu-");
                state.functions.insert(
                    id.clone(),
                    Func {
                        id: id.clone(),
                        app_id: req.app_id.clone(),
                        tag: req.function_name.clone(),
                        definition: None,
                        generation: 0,
                        queue: Default::default(),
                    },
                );
                id
            }
        };
        let f = &state.functions[&id];
        let mut metadata = handle_metadata(f, &req.app_id);
        metadata.function_name.clone_from(&req.function_name);
        metadata.function_type = req.function_type;
        metadata.function_schema.clone_from(&req.function_schema);
        metadata
            .supported_input_formats
            .clone_from(&req.supported_input_formats);
        metadata
            .supported_output_formats
            .clone_from(&req.supported_output_formats);
        Ok(api::FunctionPrecreateResponse {
            function_id: id,
            handle_metadata: Some(metadata),
        })
    }

    /// `FunctionCreate`: a function's definition. Replacing one (a redeploy)
    /// stops the containers that run the old one.
    pub fn function_create(
        &self,
        caller: &Caller,
        req: api::FunctionCreateRequest,
        client: &crate::ClientVersions,
    ) -> Result<api::FunctionCreateResponse, Error> {
        self.check_client_version(client)?;
        caller.require(Role::Developer, "create functions")?;
        if req.function_data.is_some() {
            return Err(refuse::refused("functions placed in several regions"));
        }
        if req.schedule.is_some() {
            return Err(refuse::refused("schedules (schedule=modal.Period/Cron)"));
        }
        let def = req
            .function
            .ok_or_else(|| Error::invalid("FunctionCreate needs a function"))?;
        refuse::check_definition(&def)?;
        let mut state = self.state();
        let app = Self::app_of(&state, caller, &req.app_id)?;
        if !app.running() {
            return Err(Error::failed_precondition(format!(
                "App {} is stopped",
                app.id
            )));
        }
        let app_id = app.id.clone();
        let workspace_id = app.workspace_id.clone();
        for mount_id in &def.mount_ids {
            let ok = mount_id == crate::mounts::CLIENT_MOUNT_ID
                || state
                    .mounts
                    .manifests
                    .get(mount_id)
                    .is_some_and(|m| m.workspace_id == workspace_id);
            if !ok {
                return Err(Error::not_found(format!(
                    "Mount '{}' not found",
                    echo(mount_id)
                )));
            }
        }
        let id = if req.existing_function_id.is_empty() {
            state
                .functions
                .values()
                .find(|f| f.app_id == app_id && f.tag == def.function_name)
                .map(|f| f.id.clone())
        } else {
            Some(req.existing_function_id.clone())
        };
        let id = match id {
            Some(id) => {
                let ok = state.functions.get(&id).is_some_and(|f| f.app_id == app_id);
                if !ok {
                    return Err(Error::not_found(format!(
                        "Function '{}' not found in app {app_id}",
                        echo(&id)
                    )));
                }
                id
            }
            None => {
                let id = ids::new_id("fu-");
                state.functions.insert(
                    id.clone(),
                    Func {
                        id: id.clone(),
                        app_id: app_id.clone(),
                        tag: def.function_name.clone(),
                        definition: None,
                        generation: 0,
                        queue: Default::default(),
                    },
                );
                id
            }
        };
        let f = state.functions.get_mut(&id).expect("inserted above");
        f.definition = Some(def.clone());
        f.generation += 1;
        let generation = f.generation;
        let metadata = handle_metadata(f, &app_id);
        for task in state.tasks.values().filter(|t| t.function_id == id) {
            if task.generation != generation {
                task.request_stop(StopReason::Replaced);
            }
        }
        drop(state);
        self.bump();
        let python = &self.inner.python;
        Ok(api::FunctionCreateResponse {
            function_id: id.clone(),
            function: Some(def.clone()),
            handle_metadata: Some(metadata),
            server_warnings: vec![api::Warning {
                r#type: api::warning::WarningType::FunctionConfiguration as i32,
                message: format!(
                    "latchkey does not build images: '{}' runs with the server's Python {} \
                     (modal {}) and the packages installed there; its image definition is ignored",
                    def.function_name, python.python_version, python.modal_version
                ),
            }],
            function_data: Some(function_data(&def)),
            ..Default::default()
        })
    }

    /// `FunctionGet` (`Function.from_name`): a function of a deployed app.
    pub async fn function_get(
        &self,
        caller: &Caller,
        req: &api::FunctionGetRequest,
    ) -> Result<api::FunctionGetResponse, Error> {
        let env = self
            .inner
            .service
            .environment(caller, &req.environment_name)
            .await?;
        let state = self.state();
        let app = Self::deployed(&state, caller.workspace_id(), &env.name, &req.app_name)
            .ok_or_else(|| {
                Error::not_found(format!(
                    "App '{}' not found in environment '{}' (deploy it with modal deploy)",
                    echo(&req.app_name),
                    env.name
                ))
            })?;
        let f = app
            .function_ids
            .get(&req.object_tag)
            .and_then(|id| state.functions.get(id))
            .filter(|f| f.definition.is_some())
            .ok_or_else(|| {
                Error::not_found(format!(
                    "Function '{}' not found in app '{}'",
                    echo(&req.object_tag),
                    echo(&req.app_name)
                ))
            })?;
        let def = f.definition.as_ref().expect("filtered above");
        Ok(api::FunctionGetResponse {
            function_id: f.id.clone(),
            handle_metadata: Some(handle_metadata(f, &app.id)),
            server_warnings: Vec::new(),
            function: Some(function_data(def)),
        })
    }

    /// `FunctionMap`: a call (`.remote()` or `.map()`), with its first inputs.
    pub fn function_map(
        &self,
        caller: &Caller,
        req: api::FunctionMapRequest,
        client: &crate::ClientVersions,
    ) -> Result<api::FunctionMapResponse, Error> {
        self.check_client_version(client)?;
        caller.require(Role::Developer, "call functions")?;
        let mut state = self.state();
        let f = Self::function_of(&state, caller, &req.function_id)?;
        if f.definition.is_none() {
            return Err(Error::failed_precondition(format!(
                "Function '{}' has no definition yet (FunctionCreate)",
                f.tag
            )));
        }
        let app = &state.apps[&f.app_id];
        if !app.running() {
            return Err(Error::failed_precondition(format!(
                "App {} is stopped; its functions cannot be called",
                app.id
            )));
        }
        if state.calls.len() >= MAX_CALLS {
            // Outputs nobody fetched: the oldest finished calls go.
            let mut done: Vec<String> = state
                .calls
                .values()
                .filter(|c| c.unfinished == 0)
                .map(|c| c.id.clone())
                .collect();
            done.sort();
            for id in done.into_iter().take(MAX_CALLS / 10) {
                state.calls.remove(&id);
            }
            if state.calls.len() >= MAX_CALLS {
                return Err(Error::resource_exhausted(format!(
                    "{MAX_CALLS} calls are running on this server, its limit"
                )));
            }
        }
        let call_id = ids::new_id("fc-");
        state.calls.insert(
            call_id.clone(),
            Call {
                id: call_id.clone(),
                function_id: req.function_id.clone(),
                workspace_id: caller.workspace_id().to_owned(),
                outputs: Vec::new(),
                next_entry: 1,
                unfinished: 0,
            },
        );
        let items = Self::enqueue(
            &mut state,
            &req.function_id,
            &call_id,
            req.function_call_invocation_type,
            req.pipelined_inputs,
        )?;
        drop(state);
        self.bump();
        self.schedule(&req.function_id);
        Ok(api::FunctionMapResponse {
            function_call_id: call_id,
            pipelined_inputs: items,
            sync_client_retries_enabled: false,
            max_inputs_outstanding: 1000,
            ..Default::default()
        })
    }

    fn enqueue(
        state: &mut State,
        function_id: &str,
        call_id: &str,
        invocation_type: i32,
        inputs: Vec<api::FunctionPutInputsItem>,
    ) -> Result<Vec<api::FunctionPutInputsResponseItem>, Error> {
        if state.inputs.len() + inputs.len() > MAX_INPUTS {
            return Err(Error::resource_exhausted(format!(
                "{MAX_INPUTS} inputs are waiting on this server, its limit"
            )));
        }
        let mut items = Vec::with_capacity(inputs.len());
        let mut checked = Vec::with_capacity(inputs.len());
        for item in inputs {
            let input = item
                .input
                .ok_or_else(|| Error::invalid(format!("Input {} has no arguments", item.idx)))?;
            if let Some(api::function_input::ArgsOneof::ArgsBlobId(blob)) = &input.args_oneof {
                let uploaded = state
                    .calls
                    .get(call_id)
                    .is_some_and(|c| state.blobs.has(&c.workspace_id, blob));
                if !uploaded {
                    return Err(Error::not_found(format!(
                        "The arguments of input {} (blob {}) were not uploaded",
                        item.idx,
                        echo(blob)
                    )));
                }
            }
            checked.push((item.idx, input));
        }
        for (idx, input) in checked {
            let input_id = ids::new_id("in-");
            state.inputs.insert(
                input_id.clone(),
                Input {
                    call_id: call_id.to_owned(),
                    function_id: function_id.to_owned(),
                    idx,
                    input,
                    invocation_type,
                    task: None,
                    started_at: 0.0,
                },
            );
            if let Some(f) = state.functions.get_mut(function_id) {
                f.queue.push_back(input_id.clone());
            }
            if let Some(call) = state.calls.get_mut(call_id) {
                call.unfinished += 1;
            }
            items.push(api::FunctionPutInputsResponseItem {
                idx,
                input_id: input_id.clone(),
                input_jwt: input_id,
            });
        }
        Ok(items)
    }

    /// The call `call_id` as the caller may see it.
    fn call_of<'a>(state: &'a State, caller: &Caller, call_id: &str) -> Result<&'a Call, Error> {
        let call = state
            .calls
            .get(call_id)
            .filter(|c| c.workspace_id == caller.workspace_id())
            .ok_or_else(|| {
                Error::not_found(format!("Function call '{}' not found", echo(call_id)))
            })?;
        Self::function_of(state, caller, &call.function_id)?;
        Ok(call)
    }

    /// `FunctionPutInputs`: more inputs of a `.map()`.
    pub fn function_put_inputs(
        &self,
        caller: &Caller,
        req: api::FunctionPutInputsRequest,
    ) -> Result<api::FunctionPutInputsResponse, Error> {
        caller.require(Role::Developer, "call functions")?;
        let mut state = self.state();
        let call = Self::call_of(&state, caller, &req.function_call_id)?;
        if call.function_id != req.function_id {
            return Err(Error::invalid(format!(
                "Function call {} is not a call of function {}",
                req.function_call_id,
                echo(&req.function_id)
            )));
        }
        let invocation = api::FunctionCallInvocationType::Sync as i32;
        let items = Self::enqueue(
            &mut state,
            &req.function_id,
            &req.function_call_id,
            invocation,
            req.inputs,
        )?;
        drop(state);
        self.bump();
        self.schedule(&req.function_id);
        Ok(api::FunctionPutInputsResponse { inputs: items })
    }

    /// `FunctionFinishInputs`: the client sent all inputs of a map.
    pub fn function_finish_inputs(
        &self,
        caller: &Caller,
        req: &api::FunctionFinishInputsRequest,
    ) -> Result<(), Error> {
        let state = self.state();
        Self::call_of(&state, caller, &req.function_call_id)?;
        Ok(())
    }

    /// `FunctionCallCancel`: waiting inputs of the call fail; containers
    /// running its inputs stop.
    pub fn function_call_cancel(
        &self,
        caller: &Caller,
        req: &api::FunctionCallCancelRequest,
    ) -> Result<(), Error> {
        caller.require(Role::Developer, "cancel function calls")?;
        let mut state = self.state();
        Self::call_of(&state, caller, &req.function_call_id)?;
        let mine: Vec<(String, Option<String>)> = state
            .inputs
            .iter()
            .filter(|(_, i)| i.call_id == req.function_call_id)
            .map(|(id, i)| (id.clone(), i.task.clone()))
            .collect();
        let cancelled = api::GenericResult {
            status: GenericStatus::Terminated as i32,
            exception: "The call was cancelled".to_owned(),
            ..Default::default()
        };
        for (input_id, task) in mine {
            match task.and_then(|t| state.tasks.get(&t)) {
                Some(task) => task.request_stop(StopReason::Cancelled),
                None => complete(&mut state, &input_id, cancelled.clone(), 0, ""),
            }
        }
        drop(state);
        self.bump();
        Ok(())
    }

    /// `FunctionGetOutputs`: the call's outputs after the cursor, waiting up
    /// to the request's timeout for some.
    pub async fn function_get_outputs(
        &self,
        caller: &Caller,
        req: &api::FunctionGetOutputsRequest,
    ) -> Result<api::FunctionGetOutputsResponse, Error> {
        let cursor = parse_cursor(&req.last_entry_id);
        let timeout = if req.timeout.is_finite() && req.timeout > 0.0 {
            Duration::from_secs_f32(req.timeout).min(MAX_POLL)
        } else {
            Duration::ZERO
        };
        let deadline = tokio::time::Instant::now() + timeout;
        let mut rx = self.inner.tick.subscribe();
        loop {
            rx.borrow_and_update();
            {
                let mut state = self.state();
                let call = Self::call_of(&state, caller, &req.function_call_id)?;
                let outputs: Vec<(u64, api::FunctionGetOutputsItem)> = call
                    .outputs
                    .iter()
                    .filter(|(entry, _)| *entry > cursor)
                    .cloned()
                    .collect();
                let unfinished = call.unfinished;
                let done = tokio::time::Instant::now() >= deadline;
                if !outputs.is_empty() || done || unfinished == 0 && call.outputs.is_empty() {
                    let last = outputs.last().map_or(cursor, |(e, _)| *e);
                    if req.clear_on_success && unfinished == 0 {
                        state.calls.remove(&req.function_call_id);
                    }
                    return Ok(api::FunctionGetOutputsResponse {
                        idxs: outputs.iter().map(|(_, o)| o.idx).collect(),
                        outputs: outputs.into_iter().map(|(_, o)| o).collect(),
                        last_entry_id: last.to_string(),
                        num_unfinished_inputs: i32::try_from(unfinished).unwrap_or(i32::MAX),
                    });
                }
            }
            let _ = tokio::time::timeout_at(deadline, rx.changed()).await;
        }
    }

    // The container side.

    /// `ContainerHello` and `ContainerHeartbeat`: the task is known.
    pub fn container_alive(&self, task_id: &str) -> Result<(), Error> {
        if self.state().tasks.contains_key(task_id) {
            Ok(())
        } else {
            Err(Error::not_found(format!(
                "Task '{}' not found",
                echo(task_id)
            )))
        }
    }

    /// `FunctionGetInputs`: the next input for the task's function, waiting
    /// for one; a kill switch when the container must stop.
    pub async fn function_get_inputs(
        &self,
        task_id: &str,
    ) -> Result<api::FunctionGetInputsResponse, Error> {
        let kill = || api::FunctionGetInputsResponse {
            inputs: vec![api::FunctionGetInputsItem {
                kill_switch: true,
                ..Default::default()
            }],
            rate_limit_sleep_duration: 0.0,
        };
        let deadline = tokio::time::Instant::now() + INPUT_POLL;
        let mut rx = self.inner.tick.subscribe();
        loop {
            rx.borrow_and_update();
            let assigned = {
                let mut state = self.state();
                let Some(task) = state.tasks.get(task_id) else {
                    return Ok(kill());
                };
                if task.stopping() {
                    return Ok(kill());
                }
                let function_id = task.function_id.clone();
                let next = state
                    .functions
                    .get_mut(&function_id)
                    .and_then(|f| f.queue.pop_front());
                match next {
                    Some(input_id) => {
                        let timeout = state
                            .functions
                            .get(&function_id)
                            .and_then(|f| f.definition.as_ref())
                            .map_or(DEFAULT_TIMEOUT_SECS, |d| d.timeout_secs);
                        let timeout = if timeout == 0 {
                            DEFAULT_TIMEOUT_SECS
                        } else {
                            timeout
                        };
                        let task = state.tasks.get_mut(task_id).expect("checked above");
                        task.inputs.push(input_id.clone());
                        task.idle_since = None;
                        task.took_input = true;
                        let input = state
                            .inputs
                            .get_mut(&input_id)
                            .expect("queued inputs exist");
                        input.task = Some(task_id.to_owned());
                        input.started_at = now_secs();
                        Some((
                            api::FunctionGetInputsItem {
                                input_id: input_id.clone(),
                                input: Some(input.input.clone()),
                                function_call_id: input.call_id.clone(),
                                function_call_invocation_type: input.invocation_type,
                                retry_count: 0,
                                function_map_idx: Some(input.idx),
                                attempt_token: input_id.clone(),
                                ..Default::default()
                            },
                            input_id,
                            timeout,
                        ))
                    }
                    None => {
                        let task = state.tasks.get_mut(task_id).expect("checked above");
                        if task.inputs.is_empty() && task.idle_since.is_none() {
                            task.idle_since = Some(Instant::now());
                        }
                        None
                    }
                }
            };
            if let Some((item, input_id, timeout)) = assigned {
                self.watch_timeout(task_id, &input_id, timeout);
                return Ok(api::FunctionGetInputsResponse {
                    inputs: vec![item],
                    rate_limit_sleep_duration: 0.0,
                });
            }
            if tokio::time::timeout_at(deadline, rx.changed())
                .await
                .is_err()
            {
                return Ok(api::FunctionGetInputsResponse::default());
            }
        }
    }

    /// Stops the task if input `input_id` still runs there after `secs`.
    fn watch_timeout(&self, task_id: &str, input_id: &str, secs: u32) {
        let this = self.clone();
        let (task_id, input_id) = (task_id.to_owned(), input_id.to_owned());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(u64::from(secs))).await;
            let state = this.state();
            let running = state
                .inputs
                .get(&input_id)
                .is_some_and(|i| i.task.as_deref() == Some(task_id.as_str()));
            if let (true, Some(task)) = (running, state.tasks.get(&task_id)) {
                task.request_stop(StopReason::Timeout { input_id, secs });
            }
        });
    }

    /// `FunctionPutOutputs`: results of the task's inputs. Unknown inputs
    /// (cancelled, or a retried request) are ignored: the client retries
    /// this call until it succeeds.
    pub fn function_put_outputs(
        &self,
        task_id: &str,
        req: api::FunctionPutOutputsRequest,
    ) -> Result<(), Error> {
        let mut state = self.state();
        if !state.tasks.contains_key(task_id) {
            return Err(Error::not_found(format!(
                "Task '{}' not found",
                echo(task_id)
            )));
        }
        for item in req.outputs {
            let mine = state
                .inputs
                .get(&item.input_id)
                .is_some_and(|i| i.task.as_deref() == Some(task_id));
            if !mine {
                continue;
            }
            let result = item
                .result
                .unwrap_or_else(|| failure("The container sent no result", true));
            complete(
                &mut state,
                &item.input_id,
                result,
                item.data_format,
                task_id,
            );
        }
        drop(state);
        self.bump();
        Ok(())
    }

    /// `TaskResult`: the container failed before or outside an input (its
    /// import failed): its inputs and the waiting ones fail with it.
    pub fn task_result(&self, task_id: &str, req: api::TaskResultRequest) -> Result<(), Error> {
        let mut state = self.state();
        let Some(task) = state.tasks.get_mut(task_id) else {
            return Err(Error::not_found(format!(
                "Task '{}' not found",
                echo(task_id)
            )));
        };
        let result = req
            .result
            .unwrap_or_else(|| failure("The container failed", true));
        if result.status != GenericStatus::Success as i32 {
            task.failure = Some(result);
            task.request_stop(StopReason::Failed);
        }
        drop(state);
        self.bump();
        Ok(())
    }
}

/// A function's definition as `FunctionData` (what `FunctionGet` answers
/// and `FunctionCreate` echoes).
fn function_data(def: &api::Function) -> api::FunctionData {
    api::FunctionData {
        module_name: def.module_name.clone(),
        function_name: def.function_name.clone(),
        function_type: def.function_type,
        timeout_secs: def.timeout_secs,
        task_idle_timeout_secs: def.task_idle_timeout_secs,
        function_schema: def.function_schema.clone(),
        supported_input_formats: def.supported_input_formats.clone(),
        supported_output_formats: def.supported_output_formats.clone(),
        implementation_name: def.implementation_name.clone(),
        ranked_functions: vec![api::function_data::RankedFunction {
            rank: 0,
            function: Some(def.clone()),
        }],
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::parse_cursor;

    #[test]
    fn cursors_parse_ours_and_modals_start() {
        assert_eq!(parse_cursor("0-0"), 0);
        assert_eq!(parse_cursor("17"), 17);
        assert_eq!(parse_cursor(""), 0);
        assert_eq!(parse_cursor("junk"), 0);
    }
}
