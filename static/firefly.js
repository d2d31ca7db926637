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
