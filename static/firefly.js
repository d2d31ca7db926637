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

// Bulk decisions: while tasks are checked for the inbox's bulk form, its table's polling
// waits, so a refresh never unchecks what someone selected.
document.addEventListener("htmx:beforeRequest", (event) => {
  const element = event.detail.elt;
  if (
    element.hasAttribute("data-pause-while-selected") &&
    document.querySelector('input[form="bulk-decide"]:checked')
  ) {
    event.preventDefault();
  }
});
