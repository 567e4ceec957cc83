/* iWebLens try-it page: send a photo to the detection API, draw the boxes it answers with.
 *
 * The photo goes to the API as multipart/form-data with one part named "image", the same request
 * the reference client sends, so the page exercises the path real users take; the options (model,
 * minimum confidence, classes) become form fields only when they differ from the defaults, and an
 * API key becomes an Authorization header. The model picker lists the models and views the server
 * serves (GET /api/models), and the class list offers the picked model's labels. The browser
 * decodes the photo itself only to draw it; the boxes come from the API, in original-image pixels,
 * and are scaled to whatever size the photo is displayed at. The annotated image to download is
 * the API's own (annotate=true).
 */
"use strict";

(() => {
  // Relative, so the page keeps working behind a reverse proxy that mounts it under a path.
  const API_URL = "api/object_detection";
  const MODELS_URL = "api/models";
  const DEFAULT_CONFIDENCE = "0.5"; // the service's own default: not sent
  const KEY_STORAGE = "iweblens-api-key"; // this tab only (sessionStorage)
  // Bright enough for dark label text; the first few, used most, are the most distinct.
  const PALETTE = [
    "#4dabf7", "#ffd43b", "#ff6b6b", "#69db7c", "#b197fc",
    "#ffa94d", "#3bc9db", "#f783ac", "#a9e34b", "#e599f7",
  ];
  const TAG_TEXT_COLOUR = "#10131a";
  const TAG_FONT_FAMILY = "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif";
  const NARROW_CANVAS = 480; // CSS px; below it, smaller tags leave more of the photo visible
  const MAX_HEIGHT_SHARE = 0.7; // of the window, so a portrait photo never needs scrolling past

  const PROBLEMS = {
    invalid_image: {
      title: "This file is not an image the service can read.",
      advice: "Pick a complete photo in JPEG, PNG, WebP, GIF, BMP, TIFF or AVIF format.",
    },
    unsupported_format: {
      title: "This image format is not supported.",
      advice: "Pick a photo in JPEG, PNG, WebP, GIF, BMP, TIFF or AVIF format (save HEIC photos as JPEG).",
    },
    empty_image: {
      title: "This file is empty.",
      advice: "Pick a photo that has something in it.",
    },
    too_large: {
      title: "This image is too large for the service.",
      advice: "Try a smaller photo, or scale this one down before uploading it.",
    },
    unsupported: {
      title: "The service did not accept this kind of upload.",
      advice: "Pick an image file.",
    },
    not_ready: {
      title: "The detector is not ready yet.",
      advice: "The model may still be loading. Try again in a moment.",
    },
    not_found: {
      title: "The detection service was not found at this address.",
      advice: "Open this page from the iWebLens server itself.",
    },
    unreachable: {
      title: "The service could not be reached.",
      advice: "Check that iWebLens is running and try again.",
    },
    needs_key: {
      title: "This server needs an API key.",
      advice: "Enter the key in the API key field under Options, then try again.",
    },
    bad_option: {
      title: "The service did not accept the options.",
      advice: "Change the options and try again.",
    },
    bad_model: {
      title: "This model is not available on the server.",
      advice: "Pick another model, or reload the page to see the models the server has now.",
    },
    unexpected: {
      title: "Something went wrong on the server.",
      advice: "Try again, or try another photo.",
    },
  };
  const PROBLEM_BY_CODE = {
    invalid_image: PROBLEMS.invalid_image,
    empty_image: PROBLEMS.empty_image,
    image_too_large: PROBLEMS.too_large,
    payload_too_large: PROBLEMS.too_large,
    unsupported_media_type: PROBLEMS.unsupported,
    unsupported_image_format: PROBLEMS.unsupported_format,
    model_unavailable: PROBLEMS.not_ready,
    unauthorized: PROBLEMS.needs_key,
    invalid_option: PROBLEMS.bad_option,
    unknown_class: PROBLEMS.bad_option,
    unknown_model: PROBLEMS.bad_model,
    model_not_loaded: PROBLEMS.bad_model,
  };
  const PROBLEM_BY_STATUS = {
    400: PROBLEMS.invalid_image,
    401: PROBLEMS.needs_key,
    404: PROBLEMS.not_found,
    405: PROBLEMS.not_found,
    413: PROBLEMS.too_large,
    415: PROBLEMS.unsupported,
    503: PROBLEMS.not_ready,
  };

  const byId = (id) => document.getElementById(id);
  const els = {
    fileInput: byId("file-input"),
    dropzone: byId("dropzone"),
    result: byId("result"),
    status: byId("status"),
    error: byId("error"),
    errorTitle: byId("error-title"),
    errorAdvice: byId("error-advice"),
    errorDetail: byId("error-detail"),
    stage: byId("stage"),
    canvas: byId("canvas"),
    placeholder: byId("placeholder"),
    caption: byId("caption"),
    stats: byId("stats"),
    elapsed: byId("elapsed"),
    servedBy: byId("served-by"),
    modelUsed: byId("model-used"),
    objects: byId("objects"),
    model: byId("model"),
    modelOption: byId("model-option"),
    modelHint: byId("model-hint"),
    confidence: byId("confidence"),
    confidenceValue: byId("confidence-value"),
    classes: byId("classes"),
    classList: byId("class-list"),
    classesSummary: byId("classes-summary"),
    clearClasses: byId("clear-classes"),
    apiKey: byId("api-key"),
    download: byId("download"),
  };

  let shown = null; // {image, objects} currently on the canvas
  let current = null; // {blob, name} of the photo last sent, for new options and the download
  let highlighted = -1;
  let latestRequest = 0;
  let drawnFor = ""; // the layout size the canvas was last drawn for
  const models = new Map(); // name -> its GET /api/models entry, for the ones the server serves
  let defaultModel = ""; // the one answering when no model is sent

  /** One colour per label, in order of first appearance: distinct within a photo. */
  function assignColours(objects) {
    const colours = new Map();
    for (const { label } of objects) {
      if (!colours.has(label)) colours.set(label, PALETTE[colours.size % PALETTE.length]);
    }
    return colours;
  }

  function plural(count, word) {
    return `${count} ${word}${count === 1 ? "" : "s"}`;
  }

  function summarise(objects) {
    const counts = new Map();
    for (const { label } of objects) counts.set(label, (counts.get(label) || 0) + 1);
    return [...counts]
      .map(([label, count]) => (count > 1 ? `${label} ×${count}` : label))
      .join(", ");
  }

  /** Decode the photo for display; null when this browser cannot show the format. */
  function loadImage(blob) {
    const url = URL.createObjectURL(blob);
    const image = new Image();
    image.src = url;
    return image
      .decode()
      .then(() => image, () => null)
      .finally(() => URL.revokeObjectURL(url));
  }

  function chosenClasses() {
    return [...els.classList.querySelectorAll("input:checked")].map((box) => box.value);
  }

  /** The options that differ from the service's defaults, as form fields. */
  function optionFields() {
    const fields = [];
    if (els.model.value && els.model.value !== defaultModel) {
      fields.push(["model", els.model.value]);
    }
    if (els.confidence.value !== DEFAULT_CONFIDENCE) {
      fields.push(["min_confidence", els.confidence.value]);
    }
    for (const label of chosenClasses()) fields.push(["classes", label]);
    return fields;
  }

  function send(blob, name, extra = []) {
    const form = new FormData();
    form.append("image", blob, name);
    for (const [field, value] of [...optionFields(), ...extra]) form.append(field, value);
    const key = els.apiKey.value.trim();
    const headers = key ? { Authorization: `Bearer ${key}` } : {};
    return fetch(API_URL, { method: "POST", body: form, headers });
  }

  function parseJson(text) {
    try {
      return JSON.parse(text);
    } catch {
      // A proxy in front of the service may answer in HTML; the status code still explains it.
      return null;
    }
  }

  async function postImage(blob, name) {
    const started = performance.now();
    const response = await send(blob, name);
    const text = await response.text();
    const elapsed = performance.now() - started;
    return { response, payload: parseJson(text), elapsed };
  }

  function explain(status, payload) {
    const error = payload && payload.error;
    const problem =
      (error && PROBLEM_BY_CODE[error.code]) || PROBLEM_BY_STATUS[status] || PROBLEMS.unexpected;
    const said = error && error.message ? `The service said: ${error.message} ` : "";
    return { ...problem, detail: `${said}(HTTP ${status}).` };
  }

  function setState(state, message) {
    els.result.dataset.state = state;
    els.result.setAttribute("aria-busy", String(state === "busy"));
    els.status.textContent = message;
  }

  function showStats(elapsedMs, servedBy, model) {
    els.elapsed.textContent = `${Math.round(elapsedMs)} ms`;
    els.modelUsed.textContent = model;
    els.servedBy.textContent = servedBy || "not stated";
    els.stats.hidden = false;
  }

  function clearPicture() {
    shown = null;
    els.canvas.hidden = true;
    els.canvas.removeAttribute("data-boxes");
    els.placeholder.hidden = false;
    els.caption.textContent = "";
    els.objects.replaceChildren();
  }

  function showError(problem) {
    clearPicture();
    els.errorTitle.textContent = problem.title;
    els.errorAdvice.textContent = problem.advice;
    els.errorDetail.textContent = problem.detail || "";
    els.error.hidden = false;
    els.stats.hidden = true; // until an answer, if any, says how long it took and who sent it
    els.download.hidden = true;
    setState("error", "");
  }

  function clamp(value, low, high) {
    return Math.max(low, Math.min(value, high));
  }

  function boxOnCanvas(object, scale) {
    const { left, top, width, height } = object.rectangle;
    return { x: left * scale, y: top * scale, w: width * scale, h: height * scale };
  }

  function overlapArea(a, b) {
    const w = Math.min(a.x + a.w, b.x + b.w) - Math.max(a.x, b.x);
    const h = Math.min(a.y + a.h, b.y + b.h) - Math.max(a.y, b.y);
    return w > 0 && h > 0 ? w * h : 0;
  }

  /** Put each tag where it hides the least of the tags placed before it, most confident first. */
  function placeTags(ctx, boxes, objects, width, height, tagHeight) {
    const placed = [];
    return objects.map((object, index) => {
      const box = boxes[index];
      const text = `${object.label} ${Math.round(Number(object.accuracy))}%`;
      const w = Math.ceil(ctx.measureText(text).width) + 8;
      const home = box.x - 1;
      // Beside a tag already there if need be, but never more than a tag's width away.
      const xs = [home];
      for (const other of placed) xs.push(other.x + other.w + 1, other.x - w - 1);
      // Above the box, below it, or just inside its top edge.
      const ys = [box.y - tagHeight - 1, box.y + box.h + 1, box.y + 1];
      const spots = xs
        .filter((x) => Math.abs(x - home) <= w)
        .sort((a, b) => Math.abs(a - home) - Math.abs(b - home))
        .flatMap((x) => ys.map((y) => ({
          x: clamp(x, 0, width - w),
          y: clamp(y, 0, height - tagHeight),
          w,
          h: tagHeight,
        })));
      let best = spots[0];
      let bestHidden = Infinity;
      for (const spot of spots) {
        const hidden = placed.reduce((sum, other) => sum + overlapArea(spot, other), 0);
        if (hidden < bestHidden) [best, bestHidden] = [spot, hidden];
        if (hidden === 0) break;
      }
      placed.push(best);
      return { ...best, text };
    });
  }

  function strokeBox(ctx, box, colour, emphasised) {
    const line = emphasised ? 5 : 3;
    ctx.lineWidth = line + 2;
    ctx.strokeStyle = "rgb(0 0 0 / 45%)";
    ctx.strokeRect(box.x, box.y, box.w, box.h);
    ctx.lineWidth = line;
    ctx.strokeStyle = colour;
    ctx.strokeRect(box.x, box.y, box.w, box.h);
  }

  function fillTag(ctx, tag, colour) {
    ctx.fillStyle = colour;
    ctx.fillRect(tag.x, tag.y, tag.w, tag.h);
    ctx.fillStyle = TAG_TEXT_COLOUR;
    ctx.fillText(tag.text, tag.x + 4, tag.y + tag.h / 2 + 1);
  }

  function layoutKey() {
    return `${els.stage.clientWidth}x${window.innerHeight}`;
  }

  function draw() {
    if (!shown) return;
    const { image, objects, colours } = shown;
    const maxWidth = els.stage.clientWidth;
    const maxHeight = Math.max(240, window.innerHeight * MAX_HEIGHT_SHARE);
    const fit = Math.min(maxWidth / image.naturalWidth, maxHeight / image.naturalHeight);
    const width = Math.max(1, Math.floor(image.naturalWidth * fit));
    const height = Math.max(1, Math.floor(image.naturalHeight * fit));
    const ratio = window.devicePixelRatio || 1;

    const canvas = els.canvas;
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
    canvas.style.width = `${width}px`;
    canvas.style.height = `${height}px`;
    const ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.drawImage(image, 0, 0, width, height);
    const tagHeight = width < NARROW_CANVAS ? 16 : 20;
    ctx.font = `600 ${tagHeight - 6}px ${TAG_FONT_FAMILY}`;
    ctx.textBaseline = "middle";

    const scale = width / image.naturalWidth;
    const boxes = objects.map((object) => boxOnCanvas(object, scale));
    const tags = placeTags(ctx, boxes, objects, width, height, tagHeight);
    // Least confident first, so the most confident box (and the highlighted one) ends on top;
    // tags after every box, so no box line crosses a label.
    const order = objects.map((_, index) => index).reverse();
    if (highlighted >= 0) order.push(order.splice(order.indexOf(highlighted), 1)[0]);
    for (const index of order) {
      strokeBox(ctx, boxes[index], colours.get(objects[index].label), index === highlighted);
    }
    for (const index of order) fillTag(ctx, tags[index], colours.get(objects[index].label));
    canvas.dataset.boxes = String(objects.length);
    canvas.dataset.imageWidth = String(image.naturalWidth);
    drawnFor = layoutKey();
  }

  function highlight(index) {
    highlighted = index;
    for (const item of els.objects.children) {
      item.classList.toggle("is-highlighted", Number(item.dataset.index) === index);
    }
    draw();
  }

  function listObjects(objects, colours) {
    const items = objects.map((object, index) => {
      const item = document.createElement("li");
      item.className = "object";
      item.dataset.index = String(index);
      item.dataset.label = object.label;
      item.dataset.accuracy = object.accuracy;
      for (const side of ["left", "top", "width", "height"]) {
        item.dataset[side] = String(object.rectangle[side]);
      }
      item.style.setProperty("--box-colour", colours.get(object.label));

      const swatch = document.createElement("span");
      swatch.className = "swatch";
      const name = document.createElement("span");
      name.className = "object-name";
      name.textContent = object.label;
      const confidence = document.createElement("span");
      confidence.className = "object-confidence";
      confidence.textContent = `${object.accuracy}%`;
      const meter = document.createElement("span");
      meter.className = "meter";
      meter.setAttribute("aria-hidden", "true");
      const fill = document.createElement("span");
      fill.style.setProperty("--confidence", `${object.accuracy}%`);
      meter.append(fill);

      item.append(swatch, name, confidence, meter);
      item.addEventListener("pointerenter", () => highlight(index));
      item.addEventListener("pointerleave", () => highlight(-1));
      return item;
    });
    if (items.length === 0) {
      const none = document.createElement("li");
      none.className = "no-objects";
      none.textContent = "No objects found above the confidence threshold.";
      items.push(none);
    }
    els.objects.replaceChildren(...items);
  }

  function showResult(image, objects, name) {
    els.error.hidden = true;
    highlighted = -1;
    const found = plural(objects.length, "object");
    const colours = assignColours(objects);
    if (image) {
      shown = { image, objects, colours };
      els.placeholder.hidden = true;
      els.canvas.hidden = false;
      els.canvas.setAttribute(
        "aria-label",
        `${name} with ${found} boxed${objects.length ? `: ${summarise(objects)}` : ""}`,
      );
      els.caption.textContent = `${name} · ${image.naturalWidth} × ${image.naturalHeight} px`;
      draw();
    } else {
      clearPicture();
      els.caption.textContent =
        `This browser cannot display ${name}; the list shows what the model found.`;
    }
    listObjects(objects, colours);
    els.download.hidden = false;
    setState("done", `Found ${found} in ${name}.`);
  }

  function revealResult() {
    if (els.result.getBoundingClientRect().top < window.innerHeight * 0.6) return;
    const still = window.matchMedia("(prefers-reduced-motion: reduce)").matches;
    els.result.scrollIntoView({ behavior: still ? "auto" : "smooth", block: "start" });
  }

  async function detect(blob, name) {
    current = { blob, name };
    const request = ++latestRequest;
    const model = els.model.value || "default";
    setState("busy", `Detecting objects in ${name}…`);
    revealResult();
    const imageLoaded = loadImage(blob);
    let answer;
    try {
      answer = await postImage(blob, name);
    } catch {
      if (request === latestRequest) showError({ ...PROBLEMS.unreachable, detail: "" });
      return;
    }
    const image = await imageLoaded;
    if (request !== latestRequest) return; // a newer photo was picked meanwhile
    const { response, payload, elapsed } = answer;
    const servedBy = response.headers.get("X-Served-By");
    if (!response.ok || !payload || !Array.isArray(payload.objects)) {
      showError(explain(response.status, payload));
      showStats(elapsed, servedBy, model);
      return;
    }
    showStats(elapsed, servedBy, model);
    showResult(image, payload.objects, name);
  }

  async function detectSample(button) {
    const name = button.dataset.name;
    try {
      const response = await fetch(button.dataset.src);
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      await detect(await response.blob(), name);
    } catch {
      showError({ ...PROBLEMS.unreachable, detail: `The sample ${name} could not be loaded.` });
    }
  }

  function annotatedName(name) {
    const dot = name.lastIndexOf(".");
    return `${dot > 0 ? name.slice(0, dot) : name}-annotated.jpg`;
  }

  /** Ask the API for the same detection drawn on the photo, and save what it answers. */
  async function downloadAnnotated() {
    if (!current) return;
    const { blob, name } = current;
    els.download.disabled = true;
    try {
      const response = await send(blob, name, [["annotate", "true"]]);
      if (!response.ok) {
        showError(explain(response.status, parseJson(await response.text())));
        return;
      }
      const url = URL.createObjectURL(await response.blob());
      const link = document.createElement("a");
      link.href = url;
      link.download = annotatedName(name);
      document.body.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(url), 60_000);
    } catch {
      showError({ ...PROBLEMS.unreachable, detail: "" });
    } finally {
      els.download.disabled = false;
    }
  }

  function detectAgain() {
    if (current) detect(current.blob, current.name);
  }

  function summariseClasses() {
    const chosen = chosenClasses();
    els.classesSummary.textContent = chosen.length ? chosen.join(", ") : "all";
  }

  /** One checkbox per label of the picked model; the chosen ones it also has stay chosen. */
  function showClasses(labels) {
    const kept = new Set(chosenClasses());
    const boxes = labels.map((label) => {
      const item = document.createElement("label");
      const box = document.createElement("input");
      box.type = "checkbox";
      box.name = "classes";
      box.value = label;
      box.checked = kept.has(label);
      item.append(box, ` ${label}`);
      return item;
    });
    for (const item of els.classList.querySelectorAll("label")) item.remove();
    els.classList.append(...boxes);
    els.classes.hidden = boxes.length === 0;
    summariseClasses();
  }

  function describeModel() {
    const model = models.get(els.model.value);
    els.modelHint.textContent = model.kind === "view"
      ? `A view of ${model.base}: it answers ${model.labels.join(", ")}.`
      : `${plural(model.labels.length, "label")}, ${model.input_size} px input, `
        + `${model.engine} engine.`;
    showClasses(model.labels);
  }

  /** The model picker: the models and views the server serves, its default chosen. */
  async function listModels() {
    let listing;
    try {
      const response = await fetch(MODELS_URL);
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      listing = await response.json();
    } catch {
      return; // without the list, the page still works with the default model and every class
    }
    defaultModel = listing.default;
    const choices = listing.models.filter((model) => model.loaded).map((model) => {
      models.set(model.name, model);
      const option = document.createElement("option");
      option.value = model.name;
      option.textContent = model.name === defaultModel ? `${model.name} (default)` : model.name;
      option.selected = model.name === defaultModel;
      return option;
    });
    els.model.replaceChildren(...choices);
    els.modelOption.hidden = false;
    describeModel();
  }

  function firstFile(transfer) {
    return transfer && transfer.files && transfer.files.length ? transfer.files[0] : null;
  }

  els.fileInput.addEventListener("change", () => {
    const file = els.fileInput.files[0];
    if (file) detect(file, file.name);
    els.fileInput.value = ""; // picking the same file again must fire "change" again
  });

  for (const button of document.querySelectorAll(".sample")) {
    button.addEventListener("click", () => detectSample(button));
  }

  // Dropping anywhere on the page counts; without this the browser would navigate to the file.
  let dragDepth = 0;
  document.addEventListener("dragenter", (event) => {
    event.preventDefault();
    dragDepth += 1;
    els.dropzone.classList.add("is-dragging");
  });
  document.addEventListener("dragleave", () => {
    dragDepth = Math.max(0, dragDepth - 1);
    if (dragDepth === 0) els.dropzone.classList.remove("is-dragging");
  });
  document.addEventListener("dragover", (event) => event.preventDefault());
  document.addEventListener("drop", (event) => {
    event.preventDefault();
    dragDepth = 0;
    els.dropzone.classList.remove("is-dragging");
    const file = firstFile(event.dataTransfer);
    if (file) detect(file, file.name);
  });

  document.addEventListener("paste", (event) => {
    const file = firstFile(event.clipboardData);
    if (file) detect(file, file.name || "pasted image");
  });

  // Redraw only when the space changed: drawing resizes the canvas, which would re-trigger this.
  const redrawIfLayoutChanged = () => {
    if (shown && layoutKey() !== drawnFor) draw();
  };
  new ResizeObserver(redrawIfLayoutChanged).observe(els.stage);
  window.addEventListener("resize", redrawIfLayoutChanged);

  els.confidence.addEventListener("input", () => {
    els.confidenceValue.textContent = `${Math.round(Number(els.confidence.value) * 100)}%`;
  });
  els.model.addEventListener("change", () => {
    describeModel();
    detectAgain();
  });
  els.confidence.addEventListener("change", detectAgain);
  els.classList.addEventListener("change", () => {
    summariseClasses();
    detectAgain();
  });
  els.clearClasses.addEventListener("click", () => {
    for (const box of els.classList.querySelectorAll("input:checked")) box.checked = false;
    summariseClasses();
    detectAgain();
  });
  els.apiKey.value = sessionStorage.getItem(KEY_STORAGE) || "";
  els.apiKey.addEventListener("change", () => {
    sessionStorage.setItem(KEY_STORAGE, els.apiKey.value.trim());
    detectAgain();
  });
  els.download.addEventListener("click", downloadAnnotated);
  document.getElementById("options").addEventListener("submit", (event) => event.preventDefault());

  listModels();
  setState("empty", "");
})();
