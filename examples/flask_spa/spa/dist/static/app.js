// Hand-written "built" single-page app: a history-mode router with two views. A deep link such as
// /dashboard/42 only works when the web server answers unknown paths with index.html (the SPA fallback).
"use strict";

const routes = [
  { pattern: /^\/$/, render: () => "<h1>Home</h1><p id=\"version\">API version: …</p>" },
  {
    pattern: /^\/dashboard\/(\d+)$/,
    render: (id) => `<h1>Dashboard ${id}</h1><p id="dashboard-id" data-id="${id}">Showing dashboard ${id}</p>`,
  },
];

function render(path) {
  const view = document.getElementById("view");
  for (const route of routes) {
    const match = path.match(route.pattern);
    if (match) {
      view.innerHTML = route.render(...match.slice(1));
      return;
    }
  }
  view.innerHTML = "<h1>Not found</h1>";
}

function loadVersion() {
  const target = document.getElementById("version");
  if (!target) return;
  fetch("/api/version")
    .then((response) => response.json())
    .then((body) => { target.textContent = `API version: ${body.version} (release ${body.release})`; })
    .catch(() => { target.textContent = "API unreachable"; });
}

document.addEventListener("click", (event) => {
  const link = event.target.closest("a[data-link]");
  if (!link) return;
  event.preventDefault();
  history.pushState(null, "", link.getAttribute("href"));
  render(location.pathname);
  loadVersion();
});

window.addEventListener("popstate", () => { render(location.pathname); loadVersion(); });
render(location.pathname);
loadVersion();
