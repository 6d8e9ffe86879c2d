// latchkey dashboard: the only script. Every page works without it; it adds
// copy buttons. It fetches a value only when its button is pressed.
"use strict";

async function copyText(text) {
  if (navigator.clipboard && window.isSecureContext) {
    await navigator.clipboard.writeText(text);
    return;
  }
  const area = document.createElement("textarea");
  area.value = text;
  area.setAttribute("readonly", "");
  area.className = "offscreen";
  document.body.appendChild(area);
  area.select();
  const ok = document.execCommand("copy");
  area.remove();
  if (!ok) throw new Error("copy refused");
}

function say(button, message) {
  if (!button.dataset.label) button.dataset.label = button.textContent;
  button.textContent = message;
  setTimeout(() => { button.textContent = button.dataset.label; }, 1500);
}

document.addEventListener("click", async (event) => {
  const button = event.target.closest("button[data-copy-url], button[data-copy-target]");
  if (!button) return;
  event.preventDefault();
  try {
    let text;
    if (button.dataset.copyUrl) {
      const response = await fetch(button.dataset.copyUrl, { credentials: "same-origin", cache: "no-store" });
      const type = response.headers.get("content-type") || "";
      if (!response.ok || response.redirected || !type.startsWith("text/plain")) throw new Error("not a value");
      text = await response.text();
    } else {
      text = document.getElementById(button.dataset.copyTarget).textContent;
    }
    await copyText(text);
    say(button, "Copied");
  } catch (e) {
    say(button, "Copy failed");
  }
});

for (const button of document.querySelectorAll("button[data-copy-url], button[data-copy-target]")) {
  button.hidden = false;
}
