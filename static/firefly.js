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

// A box that scrolls (a wide table, the DAG picture, a long JSON block) must be reachable
// by the keyboard to be scrolled: focusable, a region, named after its section.
function labelFor(box) {
  const summary = box.closest("details") && box.closest("details").querySelector("summary");
  const section = box.closest("section, .card");
  const heading = section && section.querySelector("h2, h3");
  const text = (summary || heading || {}).textContent || "Scrolling content";
  return text.trim().replace(/\s+/g, " ");
}

function reachScrollingBoxes(root) {
  root.querySelectorAll("pre, .table-wrap, .dag-wrap").forEach((box) => {
    const scrolls = box.scrollWidth > box.clientWidth + 1 || box.scrollHeight > box.clientHeight + 1;
    if (!scrolls || box.hasAttribute("tabindex")) {
      return;
    }
    box.tabIndex = 0;
    if (!box.hasAttribute("role")) {
      box.setAttribute("role", "region");
    }
    if (!box.hasAttribute("aria-label") && !box.hasAttribute("aria-labelledby")) {
      box.setAttribute("aria-label", labelFor(box));
    }
  });
}

document.addEventListener("DOMContentLoaded", () => reachScrollingBoxes(document));
document.addEventListener("htmx:afterSettle", () => reachScrollingBoxes(document));
// Opening a <details> can show a box that scrolls; "toggle" does not bubble, so capture it.
document.addEventListener("toggle", () => reachScrollingBoxes(document), true);
let resizing = 0;
window.addEventListener("resize", () => {
  window.clearTimeout(resizing);
  resizing = window.setTimeout(() => reachScrollingBoxes(document), 200);
});

// Keyboard shortcuts (listed in the "?" dialog of base.html). None acts while the focus is
// in a field or with a modifier held, and none decides: "a" and "r" only move the focus to
// the form a mouse user would use, whose button still has to be pressed.
const INBOX_ORDER = "firefly.inboxOrder";

function inboxRows() {
  return Array.from(document.querySelectorAll("#inbox tbody tr[data-task-url]"));
}

function rememberInboxOrder() {
  const rows = inboxRows();
  if (!rows.length) {
    return;
  }
  try {
    window.sessionStorage.setItem(INBOX_ORDER, JSON.stringify(rows.map((row) => row.dataset.taskUrl)));
  } catch (error) {
    // Storage refused (private mode, quota): n and p fall back to the inbox.
  }
}

let chosenTask = "";

function choose(row) {
  inboxRows().forEach((other) => {
    other.classList.toggle("selected", other === row);
    other.removeAttribute("aria-current");
  });
  row.setAttribute("aria-current", "true");
  chosenTask = row.dataset.taskUrl;
  const link = row.querySelector("a.task-link") || row.querySelector("a");
  link.focus();
}

function moveInInbox(step) {
  const rows = inboxRows();
  if (!rows.length) {
    return false;
  }
  let index = rows.findIndex((row) => row.classList.contains("selected"));
  index = index < 0 ? (step > 0 ? 0 : rows.length - 1) : Math.min(Math.max(index + step, 0), rows.length - 1);
  choose(rows[index]);
  return true;
}

function chosenRow() {
  return inboxRows().find((row) => row.classList.contains("selected"));
}

document.addEventListener("DOMContentLoaded", rememberInboxOrder);
// The inbox refreshes every few seconds: keep its order for n/p, and the chosen row chosen.
document.addEventListener("htmx:afterSettle", () => {
  rememberInboxOrder();
  const row = inboxRows().find((candidate) => candidate.dataset.taskUrl === chosenTask);
  if (row) {
    row.classList.add("selected");
    row.setAttribute("aria-current", "true");
  }
});

function neighbourTask(step) {
  let order = [];
  try {
    order = JSON.parse(window.sessionStorage.getItem(INBOX_ORDER) || "[]");
  } catch (error) {
    order = [];
  }
  const here = order.indexOf(window.location.pathname);
  if (here < 0) {
    return order.length ? order[step > 0 ? 0 : order.length - 1] : "/";
  }
  return order[here + step] || "/";
}

function focusOn(element) {
  if (!element) {
    return false;
  }
  element.scrollIntoView({ block: "center" });
  element.focus();
  return true;
}

function goToDecision() {
  const panel = document.getElementById("task-panel");
  if (!panel) {
    return false;
  }
  const primary = panel.querySelector("form button.primary");
  if (!primary) {
    return false;
  }
  // An input task: its first field, not the Submit button past the form.
  const field = primary.form && primary.form.action.endsWith("/complete/")
    ? primary.form.querySelector("input:not([type=hidden]), select, textarea")
    : null;
  return focusOn(field || primary);
}

function goToReject() {
  const panel = document.getElementById("task-panel");
  return focusOn(panel && panel.querySelector('form[action$="/reject/"] textarea'));
}

function runLink() {
  const row = chosenRow();
  if (row) {
    return row.querySelector('a[href*="/runs/"]');
  }
  return document.getElementById("task-panel") ? document.querySelector('main .crumbs a[href*="/runs/"]') : null;
}

function follow(link) {
  if (!link) {
    return false;
  }
  window.location.assign(link.href);
  return true;
}

function typing(target) {
  return target instanceof Element && (target.closest("input, textarea, select, [contenteditable]") !== null);
}

let awaitingG = false;

document.addEventListener("keydown", (event) => {
  const dialog = document.getElementById("shortcuts");
  if (event.defaultPrevented || event.isComposing || event.ctrlKey || event.metaKey || event.altKey) {
    return;
  }
  if (typing(event.target) || (dialog && dialog.open) || document.querySelector("dialog[open]")) {
    return;
  }
  const key = event.key;
  const afterG = awaitingG;
  awaitingG = false;
  let done = false;
  if (afterG && key === "r") {
    done = follow(runLink());
  } else if (key === "?") {
    if (dialog) {
      dialog.showModal();
      done = true;
    }
  } else if (key === "j" || key === "k") {
    done = moveInInbox(key === "j" ? 1 : -1);
  } else if (key === "o") {
    const row = chosenRow();
    done = follow(row && (row.querySelector("a.task-link") || row.querySelector("a")));
  } else if (key === "a") {
    done = goToDecision();
  } else if (key === "r") {
    done = goToReject();
  } else if ((key === "n" || key === "p") && document.getElementById("task-panel")) {
    window.location.assign(neighbourTask(key === "n" ? 1 : -1));
    done = true;
  } else if (key === "u") {
    done = follow(runLink());
  } else if (key === "g") {
    awaitingG = true;
    done = true;
  }
  if (done) {
    event.preventDefault();
  }
});

document.addEventListener("click", (event) => {
  const opener = event.target instanceof Element ? event.target.closest("[data-shortcuts-open]") : null;
  const dialog = document.getElementById("shortcuts");
  if (opener && dialog) {
    dialog.showModal();
  }
});

// A modal dialog leaves the rest of the page inert, but Tab past its last control would go
// on to the browser's own controls: wrap it around inside the dialog instead.
document.addEventListener("keydown", (event) => {
  const dialog = document.querySelector("dialog[open]");
  if (!dialog || event.key !== "Tab") {
    return;
  }
  const controls = Array.from(dialog.querySelectorAll("a[href], button, input, select, textarea, [tabindex]"))
    .filter((control) => control.tabIndex >= 0 && !control.disabled);
  if (!controls.length) {
    return;
  }
  const first = controls[0];
  const last = controls[controls.length - 1];
  const inside = dialog.contains(document.activeElement);
  if (event.shiftKey && (document.activeElement === first || !inside)) {
    event.preventDefault();
    last.focus();
  } else if (!event.shiftKey && (document.activeElement === last || !inside)) {
    event.preventDefault();
    first.focus();
  }
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


// Big pipelines. A wide picture scrolls inside its .dag-wrap; the step at work (the page's
// current step, else the first one running, waiting or queued) is scrolled into view on
// load and after each refresh, unless the reader moved the picture themselves: then it
// stays where they left it. Opened groups (?expand=) and opened <details> outlive the
// refresh too.
(() => {
  const panned = new Map();  // a wrap's aria-label -> the scrollLeft the reader chose

  // A step running, waiting or queued, or a group holding one (in the picture's order).
  const AT_WORK = "svg.dag .group.active, svg.dag .node.st-running, svg.dag .node.st-waiting, svg.dag .node.st-queued";
  const keyOf = (wrap) => wrap.getAttribute("aria-label") || "";

  const centre = (root) => {
    root.querySelectorAll(".dag-wrap").forEach((wrap) => {
      const key = keyOf(wrap);
      if (panned.has(key)) {
        wrap.scrollLeft = panned.get(key);
        return;
      }
      const node = wrap.querySelector("svg.dag .current") || wrap.querySelector(AT_WORK);
      if (!node || wrap.scrollWidth <= wrap.clientWidth) {
        return;
      }
      const box = node.getBoundingClientRect();
      const frame = wrap.getBoundingClientRect();
      const offset = box.left - frame.left + wrap.scrollLeft;
      wrap.scrollLeft = Math.max(0, offset - (wrap.clientWidth - box.width) / 2);
    });
  };

  const PAN_KEYS = ["ArrowLeft", "ArrowRight", "Home", "End", "PageUp", "PageDown"];
  const remember = (event) => {
    if (event.type === "keydown" && !PAN_KEYS.includes(event.key)) {
      return;
    }
    const wrap = event.target instanceof Element ? event.target.closest(".dag-wrap") : null;
    if (wrap) {
      // Read after the browser moved it.
      window.requestAnimationFrame(() => panned.set(keyOf(wrap), wrap.scrollLeft));
    }
  };
  ["wheel", "pointerdown", "touchstart", "keydown"].forEach((type) => {
    document.addEventListener(type, remember, { passive: true });
  });
  document.addEventListener("scroll", (event) => {
    const wrap = event.target;
    if (wrap instanceof Element && wrap.classList.contains("dag-wrap") && panned.has(keyOf(wrap))) {
      panned.set(keyOf(wrap), wrap.scrollLeft);
    }
  }, true);

  // A refresh asks for the page's opened groups again.
  document.addEventListener("htmx:configRequest", (event) => {
    const here = new URL(window.location.href);
    const asked = new URL(event.detail.path, here);
    const groups = here.searchParams.getAll("expand");
    if (asked.pathname === here.pathname && groups.length && !asked.searchParams.has("expand")) {
      groups.forEach((group) => asked.searchParams.append("expand", group));
      event.detail.path = asked.pathname + asked.search;
    }
  });

  // Out-of-band parts (the run's timeline) are swapped too: look at the whole page, and
  // only once everything has settled.
  let opened = [];
  document.addEventListener("htmx:beforeSwap", () => {
    opened = [...document.querySelectorAll("details[id][open]")].map((d) => d.id);
  });
  document.addEventListener("htmx:afterSettle", () => {
    opened.forEach((id) => {
      const details = document.getElementById(id);
      if (details) {
        details.open = true;
      }
    });
    centre(document);
  });
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", () => centre(document));
  } else {
    centre(document);
  }
})();


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
