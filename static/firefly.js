// Behaviour the pages would otherwise write inline, which the Content-Security-Policy forbids.

// <form data-confirm="Question?">: ask before submitting.
document.addEventListener("submit", (event) => {
  const question = event.target.dataset ? event.target.dataset.confirm : undefined;
  if (question && !window.confirm(question)) {
    event.preventDefault();
  }
});

// An element with data-pause-while-focused skips its polling while the cursor is inside
// it, so a refresh never swaps away a form someone is filling in.
document.addEventListener("htmx:beforeRequest", (event) => {
  const element = event.detail.elt;
  if (element.hasAttribute("data-pause-while-focused") && element.contains(document.activeElement)) {
    event.preventDefault();
  }
});

// The spec editor: the text area grows with its text (so its lines stay beside the
// gutter's numbers), and "Line N" in the error list puts the cursor on that line.
document.addEventListener("input", (event) => {
  const area = event.target;
  if (area instanceof HTMLTextAreaElement && area.hasAttribute("data-autogrow")) {
    const lines = area.value.split("\n").length;
    area.rows = Math.min(Math.max(lines + 1, 12), 5000);  // editor.GUTTER_MAX_LINES
  }
});

document.addEventListener("click", (event) => {
  const link = event.target instanceof Element ? event.target.closest("a.goto-line") : null;
  const area = document.getElementById("spec-text");
  if (!link || !(area instanceof HTMLTextAreaElement)) {
    return;
  }
  event.preventDefault();
  const line = Number(link.dataset.line);
  const lines = area.value.split("\n");
  let start = 0;
  for (let i = 0; i < line - 1 && i < lines.length; i += 1) {
    start += lines[i].length + 1;
  }
  const end = start + (lines[line - 1] || "").length;
  area.focus();
  area.setSelectionRange(start, end);
});

// Task content: an element with data-pause-while-edited also skips its polling while a field
// inside it holds text someone typed and has not sent (the cursor may have left it).
document.addEventListener("htmx:beforeRequest", (event) => {
  const element = event.detail.elt;
  if (!element.hasAttribute("data-pause-while-edited") || event.detail.requestConfig?.verb !== "get") {
    return;
  }
  const edited = [...element.querySelectorAll("textarea, input[type=text], input:not([type])")]
    .some((field) => field.value !== field.defaultValue);
  if (edited) {
    event.preventDefault();
  }
});

// A link to a collapsed section (a step's output on the run page) opens it.
document.addEventListener("click", (event) => {
  const link = event.target instanceof Element ? event.target.closest('a[href^="#"]') : null;
  const target = link ? document.getElementById(link.getAttribute("href").slice(1)) : null;
  if (target instanceof HTMLDetailsElement) {
    target.open = true;
  }
});
