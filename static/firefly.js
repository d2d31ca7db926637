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
