#!/usr/bin/env python3
"""Opens the Functions zip and checks what the host needs: host.json at the root, `handler`
executable and statically linked, one folder per template with a valid, fully rendered
function.json. Prints a pass/fail line per check."""
import json, os, stat, sys, zipfile

zip_path = sys.argv[1]
templates = sys.argv[2] if len(sys.argv) > 2 else "function.json-templates"
passed, failed = 0, 0

def check(ok, what):
    global passed, failed
    print(("ok     " if ok else "FAILED ") + what)
    if ok:
        passed += 1
    else:
        failed += 1

with zipfile.ZipFile(zip_path) as z:
    names = set(z.namelist())
    check("host.json" in names, "host.json at the root")
    host = json.loads(z.read("host.json"))
    check(host["customHandler"]["description"]["defaultExecutablePath"] == "handler", "host.json runs handler")
    info = z.getinfo("handler")
    mode = info.external_attr >> 16
    check(bool(mode & stat.S_IXUSR) and bool(mode & stat.S_IXOTH), f"handler is executable (mode {oct(mode & 0o777)})")
    head = z.read("handler")[:64]
    check(head[:4] == b"\x7fELF", "handler is an ELF binary")
    body = z.read("handler")
    check(b"/lib64/ld-linux" not in body and b"ld-linux-x86-64" not in body, "handler is statically linked (no dynamic loader)")
    expected = sorted(d for d in os.listdir(templates) if os.path.isdir(os.path.join(templates, d)))
    shipped = sorted({n.split("/")[0] for n in names if n.endswith("/function.json")})
    check(shipped == expected, f"one folder per function: {shipped}")
    for name in shipped:
        text = z.read(f"{name}/function.json").decode()
        check("{{" not in text, f"{name}/function.json fully rendered")
        doc = json.loads(text)
        check(bool(doc.get("bindings")), f"{name}/function.json has bindings")
        if doc["bindings"][0]["type"] == "timerTrigger":
            check(isinstance(doc["retry"]["maxRetryCount"], int), f"{name}: retry count is a number")

print(f"package: {passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
