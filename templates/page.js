// The page's controls: read the fragment, call the generated functions, write the numbers.
// No memory formula is written here: memsymTerms and memsymServing come from engine/html.py.
"use strict";
(function () {
  const data = JSON.parse(document.getElementById("memsym-data").textContent);
  const EXACT_LIMIT = 9007199254740992; // 2^53: float64 holds every integer below it
  const COLORS = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7", "#9c755f"];
  const inputs = {};

  function node(tag, attrs, text) {
    const out = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) out.setAttribute(k, v);
    if (text !== undefined) out.textContent = text;
    return out;
  }
  function size(n) {
    return (n / 1e9).toFixed(3) + " GB = " + (n / 1073741824).toFixed(3) + " GiB";
  }
  function positiveInteger(text) {
    if (!/^[1-9][0-9]{0,15}$/.test(text)) return null;
    const n = Number(text);
    return n < EXACT_LIMIT ? n : null;
  }
  function utilization(text) { // an exact decimal fraction in (0, 1]: numerator / 10^k
    const m = /^(0|1)?(?:\.([0-9]{1,4}))?$/.exec(text);
    if (!m || (m[1] === undefined && m[2] === undefined)) return null;
    const digits = m[2] || "";
    const den = Math.pow(10, digits.length);
    const num = Number(m[1] || "0") * den + Number(digits || "0");
    return num > 0 && num <= den ? {num: num, den: den} : null;
  }
  function fragment() {
    const out = {};
    for (const part of location.hash.replace(/^#/, "").split("&")) {
      if (!part) continue;
      const i = part.indexOf("=");
      try {
        out[decodeURIComponent(i < 0 ? part : part.slice(0, i))] = i < 0 ? "" : decodeURIComponent(part.slice(i + 1));
      } catch (e) { /* a malformed escape: that part is ignored */ }
    }
    return out;
  }

  function buildControls() {
    const box = document.getElementById("controls");
    const all = data.controls.concat([
      {key: "gpu", label: "GPU (catalog memory)", kind: "select", default: data.default_gpu,
       options: data.gpus.map(g => ({value: g.name, label: g.name + " (" + g.memory_bytes + " B)"}))},
      {key: "utilization", label: "fraction of the GPU's memory used (0 < F \u2264 1)", kind: "number", default: "1"},
    ]);
    for (const c of all) {
      const label = node("label", {for: "input-" + c.key}, c.label + " [" + c.key + "]");
      let field;
      if (c.kind === "select") {
        field = node("select", {id: "input-" + c.key});
        for (const o of c.options) field.appendChild(node("option", {value: o.value}, o.label));
      } else {
        field = node("input", {id: "input-" + c.key, type: "text", inputmode: "decimal"});
      }
      field.addEventListener("change", update);
      field.addEventListener("input", update);
      label.appendChild(field);
      const error = node("span", {class: "error", id: "error-" + c.key});
      label.appendChild(error);
      box.appendChild(label);
      inputs[c.key] = {control: c, field: field, error: error};
    }
  }
  function loadFragment() {
    const given = fragment();
    for (const [key, entry] of Object.entries(inputs)) {
      const c = entry.control;
      let value = key in given ? given[key] : c.default;
      if (key === "gpu" && value in data.gpu_aliases) value = data.gpu_aliases[value];
      if (c.kind === "select" && !c.options.some(o => o.value === value)) {
        entry.field.value = c.default;
        entry.error.textContent = "unknown " + key + " " + JSON.stringify(value) + "; shown: " + c.default;
      } else {
        entry.field.value = value;
        entry.error.textContent = "";
      }
    }
    update(false);
  }

  function readValues() {
    const values = {};
    let ok = true;
    for (const [key, entry] of Object.entries(inputs)) {
      const c = entry.control, text = entry.field.value.trim();
      if (c.kind === "select") {
        const o = c.options.find(o => o.value === text);
        if (c.variable) values[c.variable] = o.x;
        continue;
      }
      const parsed = key === "utilization" ? utilization(text) : positiveInteger(text);
      entry.error.textContent = parsed === null ? (key === "utilization" ? "a decimal in (0, 1], e.g. 0.9"
                                                  : "a positive integer below 2^53") : "";
      if (parsed === null) ok = false; else if (c.variable) values[c.variable] = parsed;
    }
    return ok ? values : null;
  }
  function budget() {
    const gpu = data.gpus.find(g => g.name === inputs.gpu.field.value);
    const u = utilization(inputs.utilization.field.value.trim());
    const product = u.num * gpu.memory_bytes; // exact: below 2^53
    return (product - product % u.den) / u.den; // floor(F x memory), as engine.gpus.Budget
  }
  function writeFragment() {
    const parts = Object.entries(inputs).map(([k, e]) => encodeURIComponent(k) + "=" + encodeURIComponent(e.field.value.trim()));
    history.replaceState(null, "", "#" + parts.join("&"));
  }

  function largest(f, limit) { // the largest n >= 1 with f(n) <= limit: doubling, then bisection
    if (f(1) > limit) return {value: null, at: f(1)};
    let low = 1, high = 2;
    while (f(high) <= limit) {
      low = high; high *= 2;
      if (high >= EXACT_LIMIT) return {value: null, unbounded: true};
    }
    while (high - low > 1) {
      const middle = low + Math.floor((high - low) / 2);
      if (f(middle) <= limit) low = middle; else high = middle;
    }
    return {value: low, at: f(low), next: f(low + 1)};
  }
  function showSolve(id, answer, limit) {
    const cell = document.getElementById("solve-" + id), cert = document.getElementById("cert-" + id);
    if (typeof answer === "string") { cell.textContent = "n/a"; cert.textContent = answer; return; }
    if (answer.unbounded) { cell.textContent = "unbounded"; cert.textContent = "fits up to 2^53"; return; }
    if (answer.value === null) { cell.textContent = "none"; cert.textContent = "f(1) = " + answer.at + " > B = " + limit; return; }
    cell.textContent = String(answer.value);
    cert.textContent = "f(" + answer.value + ") = " + answer.at + " \u2264 " + limit + " < f(" + (answer.value + 1) + ") = " + answer.next;
  }

  function update(write) {
    const values = readValues();
    if (values === null) return;
    if (write !== false) writeFragment();
    const limit = budget();
    const out = memsymTerms(values);
    const rows = document.getElementById("terms-body");
    rows.textContent = "";
    for (const t of data.terms) {
      const tr = node("tr");
      tr.appendChild(node("th", {}, t.name));
      tr.appendChild(node("td", {id: "term-" + t.name, class: "num"}, String(out[t.name])));
      tr.appendChild(node("td", {}, size(out[t.name])));
      rows.appendChild(tr);
    }
    document.getElementById("total_bytes").textContent = String(out.total_bytes);
    document.getElementById("total_size").textContent = size(out.total_bytes);
    document.getElementById("budget_bytes").textContent = String(limit);
    document.getElementById("budget_size").textContent = size(limit);
    drawBar(out, limit);
    const verdict = document.getElementById("fits");
    verdict.textContent = out.total_bytes <= limit ? "Fits: " + (limit - out.total_bytes) + " bytes to spare."
                                                   : "Does not fit: " + (out.total_bytes - limit) + " bytes over.";
    verdict.className = "verdict " + (out.total_bytes <= limit ? "fits" : "over");
    document.getElementById("precision").textContent = out.largest_operand < EXACT_LIMIT
      ? "Exact: every operand is an integer below 2^53 (the largest here: " + out.largest_operand + "), computed in float64."
      : "Above 2^53: an operand reaches " + out.largest_operand + ", so the values are the nearest float64 numbers " +
        "(relative error about 1e-16) and may be a few bytes from the exact integers memsym estimate prints.";
    const peak = peakPhase(out);
    document.getElementById("phase").textContent = peak ? "Stacked: the terms of phase " + peak + ", where memory peaks." : "";
    const at = (name, n) => Object.assign({}, values, {[name]: n});
    const free = name => data.variables.includes(name);
    const fixed = name => "the total does not depend on " + name + " here";
    showSolve("seq_len", !free("seq_len") ? fixed("seq_len")
              : largest(n => memsymTerms(at("seq_len", n)).total_bytes, limit), limit);
    showSolve("batch_size", !free("batch_size") ? fixed("batch_size")
              : largest(n => memsymTerms(at("batch_size", n)).total_bytes, limit), limit);
    showSolve("concurrency", memsymServing === null ? "a serving question (inference only)"
              : !free("batch_size") ? fixed("batch_size")
              : largest(n => memsymServing(at("batch_size", n)).total_bytes, limit), limit);
  }

  function peakPhase(out) { // the first phase with the largest sum, as MemoryModel.evaluate picks it
    let peak = null, best = -1;
    for (const [phase, members] of Object.entries(data.phases)) {
      const sum = members.reduce((acc, n) => acc + out[n], 0);
      if (sum > best) { best = sum; peak = phase; }
    }
    return peak;
  }
  function peakTerms(out) { // the terms stacked: all, or the peak phase's
    const peak = peakPhase(out);
    return peak === null ? data.terms.map(t => t.name) : data.phases[peak];
  }
  function drawBar(out, limit) {
    const bar = document.getElementById("bar"), legend = document.getElementById("legend");
    bar.textContent = ""; legend.textContent = "";
    const scale = Math.max(out.total_bytes, limit) || 1;
    let left = 0;
    data.terms.forEach((t, i) => {
      const color = COLORS[i % COLORS.length];
      const item = node("span"); const swatch = node("i"); swatch.style.background = color;
      item.appendChild(swatch); item.appendChild(document.createTextNode(t.name)); legend.appendChild(item);
      if (!peakTerms(out).includes(t.name) || out[t.name] === 0) return;
      const seg = node("div", {class: "seg", title: t.name + ": " + out[t.name] + " bytes"});
      seg.style.left = (100 * left / scale) + "%"; seg.style.width = (100 * out[t.name] / scale) + "%";
      seg.style.background = color; bar.appendChild(seg); left += out[t.name];
    });
    const line = node("div", {class: "budget"}); line.style.left = (100 * limit / scale) + "%";
    line.appendChild(node("span", {}, "budget")); bar.appendChild(line);
  }

  function buildFormulas() {
    const box = document.getElementById("formulas");
    for (const t of data.terms) {
      const div = node("div", {class: "formula", id: "formula-" + t.name});
      div.appendChild(node("h3", {}, t.name + (t.description ? ": " + t.description : "")));
      div.appendChild(node("pre", {}, t.formula));
      div.appendChild(node("pre", {}, "this model: " + t.model_formula));
      div.appendChild(node("p", {class: "source"}, "source: " + t.source));
      box.appendChild(div);
    }
  }

  buildControls();
  buildFormulas();
  window.addEventListener("hashchange", loadFragment);
  loadFragment();
})();
