// Starts azurite-blob (node_modules/azurite) with the arguments given, and exits as soon as its stdin
// closes: the Python process that started it holds the other end of that pipe, so Azurite never
// outlives it, even when that process is killed. Used by dev/sandbox/_azure_azurite.py.
"use strict";
process.stdin.on("end", () => process.exit(0));
process.stdin.on("error", () => process.exit(0));
process.stdin.resume();
require("./node_modules/azurite/dist/src/blob/main.js");
