// Opened from the disk (file://), a browser runs no module script and fetches nothing: say so in the page's
// status line instead of leaving it blank. A classic script, loaded right after #status by both pages.
if (location.protocol === "file:") {
  const status = document.getElementById("status");
  status.className = "error";
  status.textContent = "This page must be served, not opened from the disk: run `mitp bundle serve " +
    "<this folder>` (or `python -m http.server` inside it) and open the address it prints.";
}
