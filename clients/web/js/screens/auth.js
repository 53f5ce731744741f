// Sign up and sign in. Sign-out lives on the "More" screen.

import { api } from "../api.js";
import { h, render, errorBox } from "../ui.js";
import { flushPending } from "../upload.js";

function form({ title, intro, submit, onsubmit, other }) {
  const handle = h("input#handle", { type: "text", name: "username", autocomplete: "username",
    autocapitalize: "none", spellcheck: "false", required: true, minlength: 3, maxlength: 32 });
  const password = h("input#password", { type: "password", name: "password", required: true,
    minlength: 8, maxlength: 128,
    autocomplete: submit === "Create account" ? "new-password" : "current-password" });
  const errors = h("div", { "aria-live": "assertive" });
  const button = h("button", { type: "submit" }, submit);
  const el = h("form", { novalidate: true, onsubmit: async (e) => {
    e.preventDefault();
    errors.replaceChildren();
    button.disabled = true;
    try {
      await onsubmit(handle.value.trim(), password.value);
    } catch (err) {
      errors.append(errorBox(err));
    } finally {
      button.disabled = false;
    }
  } },
  h("label.field", { for: "handle" }, "Handle"), handle,
  h("label.field", { for: "password" }, "Password"), password,
  errors, button);
  render(h("h1", title), h("p.muted", intro), el, other);
  handle.focus();
}

export function signInScreen({ go, session }) {
  form({
    title: "Sign in",
    intro: "Run backward, climb the weekly board.",
    submit: "Sign in",
    onsubmit: async (handle, password) => {
      await api.signIn(handle, password);
      await session.load();
      flushPending();
      go("home");
    },
    other: h("a.button.secondary", { href: "#/signup" }, "New here? Create an account"),
  });
}

export function signUpScreen({ go, session }) {
  form({
    title: "Create account",
    intro: "Pick a handle (3–32 letters, digits, _ . -) and a password of 8 or more characters.",
    submit: "Create account",
    onsubmit: async (handle, password) => {
      await api.register(handle, password);
      await api.signIn(handle, password);
      await session.load();
      go("home");
    },
    other: h("a.button.secondary", { href: "#/signin" }, "I have an account: sign in"),
  });
}
