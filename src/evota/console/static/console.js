// evota console: forms that call the REST API, the confirmation dialog, live updates.
// No build step. Every action goes to /api/v1 with the session cookie and the CSRF header;
// problems (application/problem+json) are shown next to the field they name.
(() => {
  "use strict";

  const csrf = () => document.querySelector('meta[name="csrf-token"]')?.content || "";

  // A document sent as it is (a playbook's YAML): data-encoding="yaml" on the form.
  class RawBody {
    constructor(text, type) { this.text = text; this.type = type; }
  }

  async function call(method, url, body, accept = "json") {
    const headers = { Accept: accept === "html" ? "text/html" : "application/json" };
    if (csrf()) headers["X-CSRF-Token"] = csrf();
    let payload;
    if (body instanceof FormData) payload = body;
    else if (body instanceof RawBody) {
      headers["Content-Type"] = body.type;
      payload = body.text;
    } else if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      payload = JSON.stringify(body);
    }
    let r;
    try {
      r = await fetch(url, { method, headers, body: payload, credentials: "same-origin" });
    } catch (e) {
      return { ok: false, status: 0, data: { title: "Network error", detail: String(e) } };
    }
    const text = await r.text();
    const type = r.headers.get("content-type") || "";
    let data = text;
    if (type.includes("json")) {
      try { data = text ? JSON.parse(text) : null; } catch { data = { title: r.statusText, detail: text.slice(0, 300) }; }
    } else if (!r.ok) {
      data = { title: `${r.status} ${r.statusText}`, detail: text.slice(0, 300) };
    }
    if (r.status === 401 && !location.pathname.startsWith("/login")) {
      location.href = "/login?next=" + encodeURIComponent(location.pathname + location.search);
    }
    return { ok: r.ok, status: r.status, data };
  }

  // -- reading a form into the API's JSON --------------------------------------------------

  class FieldError extends Error {
    constructor(field, message) { super(message); this.field = field; }
  }

  function setPath(obj, path, value) {
    const parts = path.split(".");
    let o = obj;
    for (const p of parts.slice(0, -1)) o = (o[p] ??= {});
    o[parts[parts.length - 1]] = value;
  }

  function getPath(obj, path) {
    return path.split(".").reduce((o, p) => (o == null ? undefined : o[p]), obj);
  }

  const splitList = (text) => text.split(/[,\n]/).map((s) => s.trim()).filter(Boolean);

  function parseWaves(name, text) {
    return splitList(text).map((token) => {
      const m = token.match(/^(\d+(?:\.\d+)?)\s*%$/);
      if (m) return { percent: Number(m[1]) };
      if (/^\d+$/.test(token)) return { count: Number(token) };
      throw new FieldError(name, `“${token}” is neither a count (5) nor a share (25%)`);
    });
  }

  function valueOf(el) {
    const kind = el.dataset.kind || "text";
    const raw = el.type === "checkbox" ? el.checked : (el.value ?? "").trim();
    switch (kind) {
      case "bool": return { value: Boolean(raw) };
      case "bool-or-empty": return raw === "" ? null : { value: raw === "true" };
      case "int": {
        if (raw === "") return null;
        if (!/^-?\d+$/.test(raw)) throw new FieldError(el.name, "must be a whole number");
        return { value: Number(raw) };
      }
      case "float": {
        if (raw === "") return null;
        const n = Number(raw);
        if (!Number.isFinite(n)) throw new FieldError(el.name, "must be a number");
        return { value: n };
      }
      case "list": return raw === "" ? null : { value: splitList(raw) };
      case "ints": {
        if (raw === "") return null;
        return { value: splitList(raw).map((t) => {
          if (!/^\d+$/.test(t)) throw new FieldError(el.name, `“${t}” is not a whole number`);
          return Number(t);
        }) };
      }
      case "waves": return raw === "" ? null : { value: parseWaves(el.name, raw) };
      case "json": {
        if (raw === "") return null;
        try { return { value: JSON.parse(raw) }; } catch (e) { throw new FieldError(el.name, "not valid JSON: " + e.message); }
      }
      default: return raw === "" ? null : { value: raw };
    }
  }

  function serialize(form) {
    const out = {};
    for (const el of form.elements) {
      if (!el.name || el.disabled || el.type === "file" || el.type === "submit" || el.type === "button") continue;
      if (el.closest("fieldset[disabled]")) continue;
      if (el.dataset.kind === "many") {
        const list = getPath(out, el.name) ?? [];
        setPath(out, el.name, list);
        if ((el.type === "checkbox" && el.checked) || (el.type !== "checkbox" && el.value)) list.push(el.value);
        continue;
      }
      const v = valueOf(el);
      if (v !== null) setPath(out, el.name, v.value);
    }
    const post = POST[form.dataset.post];
    return post ? post(out) : out;
  }

  const POST = {
    // The wizard: one maintenance window from the day boxes; extra policy JSON merged in.
    campaign(out) {
      const policy = (out.policy ??= {});
      const w = policy.windows;
      if (w && !Array.isArray(w)) {
        if (w.days && w.days.length) policy.windows = [{ days: w.days, start: w.start || "00:00", end: w.end || "00:00" }];
        else delete policy.windows;
      }
      if (out.policy_json !== undefined) {
        if (typeof out.policy_json !== "object" || Array.isArray(out.policy_json)) {
          throw new FieldError("policy_json", "must be a JSON object");
        }
        Object.assign(policy, out.policy_json);
        delete out.policy_json;
      }
      if (out.target && Array.isArray(out.target.sites) && !out.target.sites.length) delete out.target.sites;
      out.target ??= {};
      return out;
    },
    operation(out) {
      out.params ??= {};
      out.target ??= {};
      return out;
    },
  };

  function multipart(form) {
    const data = new FormData();
    for (const el of form.elements) {
      if (!el.name || el.disabled || el.type === "submit" || el.type === "button") continue;
      if (el.type === "file") {
        if (el.files.length) data.append(el.name, el.files[0]);
        continue;
      }
      const v = valueOf(el);
      if (v === null) continue;
      if (Array.isArray(v.value)) v.value.forEach((x) => data.append(el.name, x));
      else data.append(el.name, String(v.value));
    }
    return data;
  }

  // -- problems next to fields --------------------------------------------------------------

  function fieldElement(form, field) {
    let name = field || "";
    while (name) {
      const esc = CSS.escape(name);
      const el = form.querySelector(`[name="${esc}"]`) || form.querySelector(`[data-field="${esc}"]`);
      if (el) return el;
      const m = name.match(/^(.*)(?:\.[^.[\]]+|\[\d+\])$/);
      if (!m) break;
      name = m[1];
    }
    // A command's body is flat (its parameters and reason); an operation nests them.
    if (field && !field.includes(".")) {
      const el = form.querySelector(`[name$=".${CSS.escape(field)}"]`);
      if (el) return el;
    }
    return null;
  }

  function clearErrors(form) {
    form.querySelectorAll(".field-error.from-api").forEach((e) => e.remove());
    form.querySelectorAll("[aria-invalid]").forEach((e) => e.removeAttribute("aria-invalid"));
    const s = form.querySelector(".form-status");
    if (s) { s.textContent = ""; s.className = "form-status"; s.setAttribute("role", "status"); }
    const pre = form.querySelector("pre.result");
    if (pre) { pre.hidden = true; pre.textContent = ""; }
  }

  let errors = 0;
  function showProblem(form, problem, status) {
    problem = problem && typeof problem === "object" ? problem : { title: String(problem || "Error") };
    const title = problem.title || `Error ${status || ""}`;
    // In a document (YAML) the field is a path inside it: name it, next to the document.
    const raw = form.dataset.encoding === "yaml";
    const detail = (raw && problem.field ? `${problem.field}: ` : "") + (problem.detail || "");
    const text = detail ? `${title}: ${detail}` : title;
    const el = fieldElement(form, problem.field) || (raw ? form.querySelector("textarea") : null);
    const s = form.querySelector(".form-status");
    if (el) {
      const msg = document.createElement("p");
      msg.className = "field-error from-api";
      msg.id = `error-${++errors}`;
      msg.textContent = text;
      const holder = el.matches("fieldset") ? el : (el.closest(".field") || el.parentElement);
      holder.appendChild(msg);
      const input = el.matches("fieldset") ? el.querySelector("input, select, textarea") : el;
      if (input) {
        input.setAttribute("aria-invalid", "true");
        const described = (input.getAttribute("aria-describedby") || "").split(" ").filter((x) => x && !x.startsWith("error-"));
        input.setAttribute("aria-describedby", [...described, msg.id].join(" "));
        input.focus();
      }
    }
    if (s) {
      // The detail already sits next to its field; the form's status just points there.
      s.textContent = el ? `${title} (see above)` : text;
      s.className = "form-status error";
      s.setAttribute("role", "alert");
    }
  }

  function showOk(form, text) {
    const s = form.querySelector(".form-status");
    if (s) { s.textContent = text; s.className = "form-status ok"; s.setAttribute("role", "status"); }
  }

  function fill(template, data) {
    return template.replace(/\{(\w+)\}/g, (_, k) => (data && data[k] != null ? String(data[k]) : ""));
  }

  // One refresh per region at a time, fetched here and swapped with htmx.swap. htmx.ajax
  // synchronises its calls on one element (<body> without a source, the region itself with
  // one, shared with its own poll): a call while another is in flight is queued, "last" wins,
  // and its promise resolves at once, before anything was swapped, so a refresh could be lost
  // and code after it ran on the old region. Here a call during a refresh asks for one more
  // round and resolves when the region shows the newest page.
  const refreshing = new Map();
  async function refreshOnce(id) {
    const r = await fetch(location.pathname + location.search, {
      headers: { "HX-Request": "true", "HX-Target": id },
      credentials: "same-origin",
    });
    const redirect = r.headers.get("HX-Redirect");
    if (redirect) {
      location.href = redirect;
      return;
    }
    const el = document.getElementById(id);
    if (r.ok && el) htmx.swap(el, await r.text(), { swapStyle: "outerHTML", swapDelay: 0, settleDelay: 0 });
    reopenDetails();
  }
  function refresh(id) {
    if (!window.htmx || !document.getElementById(id)) return Promise.resolve();
    const running = refreshing.get(id);
    if (running) {
      running.again = true;
      return running.done;
    }
    const slot = { again: false, done: null };
    slot.done = (async () => {
      try {
        do {
          slot.again = false;
          await refreshOnce(id);
        } while (slot.again);
      } catch {
        /* the next stream event or poll refreshes again */
      } finally {
        refreshing.delete(id);
      }
    })();
    refreshing.set(id, slot);
    return slot.done;
  }

  // The campaign's steering buttons change with its state. When the focus was on one of them
  // (the operator just used it, or the state changed under it) the new first button gets the
  // focus, since the old button is gone; focus elsewhere on the page is left alone.
  async function refreshActions() {
    const before = document.activeElement;
    const inside = !!(before && before.closest && before.closest("#actions"));
    const wanted = inside || Date.now() < refocusUntil;
    await refresh("actions");
    const active = document.activeElement;
    if (wanted && (!active || active === document.body)) {
      document.querySelector("#actions button")?.focus();
    }
  }
  let refocusUntil = 0;

  // -- the confirmation dialog --------------------------------------------------------------

  function confirmWith(form) {
    const dialog = document.getElementById("confirm-dialog");
    if (!dialog || !form.dataset.confirm) return Promise.resolve({ reason: undefined });
    const need = form.dataset.reason || "optional";
    const text = document.getElementById("confirm-text");
    const reason = document.getElementById("confirm-reason");
    const field = document.getElementById("confirm-reason-field");
    const error = document.getElementById("confirm-error");
    const okButton = document.getElementById("confirm-ok");
    text.textContent = form.dataset.confirm;
    reason.value = "";
    error.hidden = true;
    field.hidden = need === "none";
    reason.required = need === "required";
    document.getElementById("confirm-reason-need").textContent = need === "required" ? "(required)" : "(optional)";
    return new Promise((resolve) => {
      const done = (result) => {
        dialog.removeEventListener("close", onClose);
        okButton.removeEventListener("click", onOk);
        document.getElementById("confirm-cancel").removeEventListener("click", onCancel);
        if (dialog.open) dialog.close();
        resolve(result);
      };
      const onOk = (ev) => {
        ev.preventDefault();
        const value = reason.value.trim();
        if (need === "required" && !value) {
          error.textContent = "Say why: the reason goes into the audit log.";
          error.hidden = false;
          reason.setAttribute("aria-invalid", "true");
          reason.focus();
          return;
        }
        reason.removeAttribute("aria-invalid");
        done({ reason: value || undefined });
      };
      const onCancel = () => done(null);
      const onClose = () => done(null);
      okButton.addEventListener("click", onOk);
      document.getElementById("confirm-cancel").addEventListener("click", onCancel);
      dialog.addEventListener("close", onClose);
      dialog.showModal();
      (need === "none" ? okButton : reason).focus();
    });
  }

  // -- submitting -------------------------------------------------------------------------

  async function submit(form, submitter) {
    clearErrors(form);
    let body;
    try {
      const enc = form.dataset.encoding;
      if (enc === "multipart") body = multipart(form);
      else if (enc === "yaml") body = new RawBody(form.querySelector("textarea").value, "application/yaml");
      else body = serialize(form);
    } catch (e) {
      if (e instanceof FieldError) return showProblem(form, { title: "Invalid field", detail: e.message, field: e.field });
      throw e;
    }
    const confirmed = await confirmWith(form);
    if (confirmed === null) return;
    if (confirmed.reason !== undefined && !(body instanceof FormData) && !(body instanceof RawBody)) body[form.dataset.reasonField || "reason"] = confirmed.reason;
    if (submitter) submitter.disabled = true;
    form.setAttribute("aria-busy", "true");
    let r;
    try {
      r = await call(form.dataset.method || "POST", form.dataset.api, body);
    } finally {
      if (submitter) submitter.disabled = false;
      form.removeAttribute("aria-busy");
    }
    if (!r.ok) return showProblem(form, r.data, r.status);
    const data = r.data || {};
    if (r.status === 202 && data.state === "awaiting_approval") {
      showOk(form, "Waiting for a second operator's approval.");
      const link = document.createElement("a");
      link.href = data.id && form.id === "operation-form" ? `/console/operations/${encodeURIComponent(data.id)}` : "/console/approvals";
      link.textContent = data.id && form.id === "operation-form" ? " Follow the operation" : " Approvals inbox";
      link.className = "awaiting-link";
      form.querySelector(".form-status")?.appendChild(link);
      return;
    }
    const then = form.dataset.then || "reload";
    if (then.startsWith("go:")) {
      location.href = fill(then.slice(3), Object.fromEntries(Object.entries(data).map(([k, v]) => [k, encodeURIComponent(String(v))])));
    } else if (then === "show") {
      showOk(form, fill(form.dataset.message || "Done.", data));
      const pre = form.querySelector("pre.result");
      if (pre && data.details && Object.keys(data.details).length) {
        pre.textContent = JSON.stringify(data.details, null, 2);
        pre.hidden = false;
      }
    } else if (then === "actions") {
      showOk(form, "Done.");
      refresh("live");
      refocusUntil = Date.now() + 3000;
      refreshActions();
    } else if (then === "recovery") {
      showRecovery(data);
    } else {
      location.reload();
    }
  }

  document.addEventListener("submit", (ev) => {
    const form = ev.target;
    if (!(form instanceof HTMLFormElement) || !form.dataset.api) return;
    ev.preventDefault();
    submit(form, ev.submitter);
  });

  // -- file inputs that fill a text field (signature, certificates) -------------------------

  document.addEventListener("change", async (ev) => {
    const el = ev.target;
    if (el instanceof HTMLInputElement && el.type === "file" && el.dataset.fill && el.files.length) {
      const target = document.getElementById(el.dataset.fill);
      if (target) {
        target.value = (await el.files[0].text()).trim();
        target.dispatchEvent(new Event("input", { bubbles: true }));
      }
    }
    if (el instanceof HTMLSelectElement && el.dataset.switch) {
      const box = document.getElementById(el.dataset.switch);
      box?.querySelectorAll("fieldset[data-for]").forEach((fs) => {
        const on = fs.dataset.for === el.value;
        fs.hidden = !on;
        fs.disabled = !on;
      });
    }
  });

  // -- the campaign wizard's live preview ---------------------------------------------------

  function setupPreview(form) {
    const target = document.getElementById(form.dataset.previewTarget);
    let timer = null;
    let seq = 0;
    const run = async () => {
      let body;
      clearErrors(form);
      try { body = serialize(form); } catch (e) {
        if (e instanceof FieldError) return showProblem(form, { title: "Invalid field", detail: e.message, field: e.field });
        throw e;
      }
      if (!body.firmware_id) return;
      const mine = ++seq;
      target.setAttribute("aria-busy", "true");
      const r = await call("POST", form.dataset.preview, body, "html");
      if (mine !== seq) return;
      target.removeAttribute("aria-busy");
      if (r.ok) target.innerHTML = r.data;
      else showProblem(form, r.data, r.status);
    };
    const later = () => { clearTimeout(timer); timer = setTimeout(run, 350); };
    form.addEventListener("input", later);
    form.addEventListener("change", later);
    run();
  }

  // -- audit verification -------------------------------------------------------------------

  document.addEventListener("click", async (ev) => {
    const button = ev.target.closest?.("button[data-verify]");
    if (button) {
      const out = document.getElementById(button.dataset.output);
      out.textContent = "Verifying…";
      const r = await call("GET", button.dataset.verify);
      if (!r.ok) { out.textContent = `${r.data?.title || "Error"}: ${r.data?.detail || ""}`; out.className = "bad"; return; }
      const v = r.data;
      out.className = v.ok ? "ok" : "bad";
      out.dataset.ok = String(v.ok);
      out.textContent = v.ok
        ? `Chain intact: all ${v.entries} entries verified.`
        : `Chain broken at entry ${v.broken_at} (${v.reason}): ${v.detail}`;
      return;
    }
    const logout = ev.target.closest?.("button[data-logout]");
    if (logout) {
      await call("POST", "/api/v1/auth/logout");
      location.href = "/login";
    }
  });

  // -- login and MFA enrolment --------------------------------------------------------------

  function setupLogin(form) {
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      clearErrors(form);
      const body = {
        username: form.username.value.trim(),
        password: form.password.value,
      };
      if (form.otp.value.trim()) body.otp = form.otp.value.trim();
      if (!body.username) return showProblem(form, { title: "Username required", field: "username" });
      if (!body.password) return showProblem(form, { title: "Password required", field: "password" });
      const r = await call("POST", "/api/v1/auth/login", body);
      if (!r.ok) {
        const p = r.data || {};
        if (p.type && p.type.endsWith("/mfa-required")) {
          p.title = "Enter your one-time code";
          p.detail = "from your authenticator app, or a recovery code";
          p.field = "otp";
        }
        return showProblem(form, p, r.status);
      }
      const next = form.dataset.next || "/console/";
      location.href = r.data.mfa_required && !r.data.mfa ? "/console/mfa" : next;
    });
  }

  function showRecovery(data) {
    const list = document.getElementById("mfa-code-list");
    list.replaceChildren(...(data.recovery_codes || []).map((c) => {
      const li = document.createElement("li");
      const code = document.createElement("code");
      code.textContent = c;
      li.appendChild(code);
      return li;
    }));
    document.getElementById("mfa-enrol")?.remove();
    const box = document.getElementById("mfa-codes");
    box.hidden = false;
    document.querySelector(".banner")?.remove();
    document.getElementById("codes-heading").focus();
  }

  function setupMfa(button) {
    button.addEventListener("click", async () => {
      const status = document.getElementById("mfa-start-status");
      const r = await call("POST", "/api/v1/auth/mfa/enroll");
      if (!r.ok) { status.textContent = `${r.data?.title || "Error"}: ${r.data?.detail || ""}`; status.className = "form-status error"; return; }
      const img = document.getElementById("mfa-qr");
      if (r.data.qr_svg) img.src = "data:image/svg+xml;base64," + btoa(unescape(encodeURIComponent(r.data.qr_svg)));
      else img.hidden = true;
      document.getElementById("mfa-secret-text").textContent = r.data.secret;
      document.getElementById("mfa-secret").hidden = false;
      button.hidden = true;
      document.getElementById("mfa-otp").focus();
    });
  }

  // -- live campaign progress (server-sent events) ------------------------------------------

  function setupStream(el) {
    if (el.hasAttribute("data-final") || !window.EventSource) return;
    // A state change while the confirmation dialog is open waits until the dialog closes, so
    // the form the operator is confirming is not swapped away under them.
    let last = el.dataset.state;
    let latest = last;
    function syncActions() {
      if (latest === last || document.querySelector("dialog[open]")) return;
      last = latest;
      refreshActions();
    }
    document.getElementById("confirm-dialog")?.addEventListener("close", () => setTimeout(syncActions, 0));
    const source = new EventSource(el.dataset.sse);
    source.addEventListener("campaign", (ev) => {
      let state = null;
      let done = false;
      try {
        const c = JSON.parse(ev.data);
        state = c.state;
        done = (c.state === "completed" || c.state === "aborted") && !c.rollback;
      } catch { /* refresh anyway */ }
      refresh("live");
      latest = state;
      syncActions();
      if (done) source.close();
    });
  }

  // A chart's data table (<details id=…>) the operator opened stays open when its live
  // region is swapped for a fresher copy (which arrives closed).
  const openDetails = new Set();
  document.addEventListener("toggle", (ev) => {
    const d = ev.target;
    if (!(d instanceof HTMLDetailsElement) || !d.id) return;
    if (d.open) openDetails.add(d.id);
    else if (d.isConnected) openDetails.delete(d.id);
  }, true);
  function reopenDetails() {
    for (const id of openDetails) {
      const d = document.getElementById(id);
      if (d instanceof HTMLDetailsElement && !d.open) d.open = true;
    }
  }
  document.addEventListener("htmx:afterSettle", reopenDetails);

  // Live regions poll only while the operator is not working inside them (no focus lost).
  window.evotaQuiet = () => {
    const active = document.activeElement;
    if (document.querySelector("dialog[open]")) return false;
    return !active || active === document.body || !active.closest("#live, #actions");
  };

  // A poll (hx-trigger="every …") skips its tick while the operator works inside a live
  // region. Cancelling htmx:beforeRequest rather than an hx-trigger filter: filters are
  // evaluated code, which the Content-Security-Policy (and htmx's allowEval: false) forbid.
  document.addEventListener("htmx:beforeRequest", (ev) => {
    const elt = ev.detail && ev.detail.elt;
    const trigger = (elt && elt.getAttribute && elt.getAttribute("hx-trigger")) || "";
    if (/^\s*every\s/.test(trigger) && !window.evotaQuiet()) ev.preventDefault();
  });

  document.addEventListener("DOMContentLoaded", () => {
    const login = document.getElementById("login-form");
    if (login) setupLogin(login);
    const mfa = document.getElementById("mfa-start");
    if (mfa) setupMfa(mfa);
    document.querySelectorAll("form[data-preview]").forEach(setupPreview);
    document.querySelectorAll("[data-sse]").forEach(setupStream);
  });
})();
