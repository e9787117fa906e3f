#!/usr/bin/env node
// Place the built backend into an Electron app's resources before packaging (the seed's
// prePackage.js role); see docs/electron.md.
//
//   node scripts/place-dist.mjs [--dist DIR] --dest RESOURCES_DIR
//
// It checks dist/bundle-manifest.json against what `nox -s bundle` left in DIR (default
// dist/): the archive's size and sha256 (and its .sha256 file), and that dist/backend/ holds
// the manifest's file count and bytes and the `backend` executable. Then it copies dist/backend/
// to RESOURCES_DIR/backend/ (with bundle-manifest.json beside the executable) through a
// temporary directory renamed into place, so the app never packages half a copy.
// Exit status: 0 placed, 1 the dist failed a check (one line says which), 2 bad usage.

import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import fs from "node:fs/promises";
import path from "node:path";
import process from "node:process";

const MANIFEST_NAME = "bundle-manifest.json";

class CheckFailed extends Error {}
class UsageError extends Error {}

function parseArgs(argv) {
  const options = { dist: "dist", dest: null };
  for (let index = 0; index < argv.length; index += 1) {
    const arg = argv[index];
    const value = argv[index + 1];
    if ((arg === "--dist" || arg === "--dest") && value !== undefined) {
      options[arg.slice(2)] = value;
      index += 1;
    } else if (arg === "--help" || arg === "-h") {
      throw new UsageError("usage: node scripts/place-dist.mjs [--dist DIR] --dest RESOURCES_DIR");
    } else {
      throw new UsageError(`unknown argument ${JSON.stringify(arg)}: ` +
        "usage: node scripts/place-dist.mjs [--dist DIR] --dest RESOURCES_DIR");
    }
  }
  if (!options.dest) throw new UsageError("--dest RESOURCES_DIR is required");
  return options;
}

async function readManifest(dist) {
  const file = path.join(dist, MANIFEST_NAME);
  let manifest;
  try {
    manifest = JSON.parse(await fs.readFile(file, "utf8"));
  } catch (error) {
    throw new CheckFailed(`${file}: ${error.code === "ENOENT" ? "missing" : error.message}; ` +
      "build the bundle first (scripts/nox -s bundle)");
  }
  const archive = manifest.archive || {};
  const problems = [];
  if (manifest.name !== "backend") problems.push("name is not 'backend'");
  if (typeof archive.name !== "string" || archive.name !== path.basename(archive.name)) {
    problems.push("archive.name is not a plain file name");
  }
  if (!Number.isInteger(archive.bytes) || archive.bytes < 1) problems.push("archive.bytes");
  if (!/^[0-9a-f]{64}$/.test(archive.sha256 || "")) problems.push("archive.sha256");
  if (!Number.isInteger(manifest.file_count)) problems.push("file_count");
  if (!Number.isInteger(manifest.unpacked_bytes)) problems.push("unpacked_bytes");
  if (problems.length > 0) {
    throw new CheckFailed(`${file}: not a bundle manifest (${problems.join(", ")})`);
  }
  return manifest;
}

async function sha256Of(file) {
  const hash = createHash("sha256");
  for await (const chunk of createReadStream(file)) hash.update(chunk);
  return hash.digest("hex");
}

async function checkArchive(dist, archive) {
  const file = path.join(dist, archive.name);
  const stat = await fs.stat(file).catch(() => null);
  if (!stat || !stat.isFile()) throw new CheckFailed(`${file}: missing (the manifest names it)`);
  if (stat.size !== archive.bytes) {
    throw new CheckFailed(`${file}: ${stat.size} bytes, the manifest says ${archive.bytes}`);
  }
  const digest = await sha256Of(file);
  if (digest !== archive.sha256) {
    throw new CheckFailed(`${file}: sha256 ${digest}, the manifest says ${archive.sha256}`);
  }
  const sidecar = await fs.readFile(`${file}.sha256`, "utf8").catch(() => null);
  if (sidecar !== null && sidecar.trim().split(/\s+/)[0] !== digest) {
    throw new CheckFailed(`${file}.sha256 does not match the archive`);
  }
}

// Files and links below `root` (links count 0 bytes), as the build's inventory counts them.
async function inventory(root) {
  let count = 0;
  let bytes = 0;
  const entries = await fs.readdir(root, { withFileTypes: true, recursive: true });
  for (const entry of entries) {
    if (entry.isSymbolicLink()) {
      count += 1;
    } else if (entry.isFile()) {
      count += 1;
      bytes += (await fs.stat(path.join(entry.parentPath ?? entry.path, entry.name))).size;
    }
  }
  return { count, bytes };
}

async function checkBundle(dist, manifest) {
  const bundle = path.join(dist, "backend");
  const executable = path.join(bundle, process.platform === "win32" ? "backend.exe" : "backend");
  const stat = await fs.stat(executable).catch(() => null);
  if (!stat || !stat.isFile()) throw new CheckFailed(`${executable}: missing`);
  if (process.platform !== "win32" && (stat.mode & 0o111) === 0) {
    throw new CheckFailed(`${executable}: not executable`);
  }
  const found = await inventory(bundle);
  if (found.count !== manifest.file_count || found.bytes !== manifest.unpacked_bytes) {
    throw new CheckFailed(`${bundle}: ${found.count} files, ${found.bytes} bytes; the manifest ` +
      `says ${manifest.file_count} files, ${manifest.unpacked_bytes} bytes: rebuild the bundle`);
  }
  return bundle;
}

async function place(bundle, manifestFile, dest) {
  await fs.mkdir(dest, { recursive: true });
  const target = path.join(dest, "backend");
  const staging = path.join(dest, `.backend-${process.pid}.tmp`);
  const old = path.join(dest, `.backend-${process.pid}.old`);
  await fs.rm(staging, { recursive: true, force: true });
  try {
    await fs.cp(bundle, staging, { recursive: true, verbatimSymlinks: true,
      preserveTimestamps: true, errorOnExist: true, force: false });
    await fs.copyFile(manifestFile, path.join(staging, MANIFEST_NAME));
    const hadOld = await fs.rename(target, old).then(() => true, (error) => {
      if (error.code === "ENOENT") return false;
      throw error;
    });
    await fs.rename(staging, target);
    if (hadOld) await fs.rm(old, { recursive: true, force: true });
  } finally {
    await fs.rm(staging, { recursive: true, force: true });
  }
  return target;
}

async function main(argv) {
  const options = parseArgs(argv);
  const dist = path.resolve(options.dist);
  const manifest = await readManifest(dist);
  await checkArchive(dist, manifest.archive);
  const bundle = await checkBundle(dist, manifest);
  const target = await place(bundle, path.join(dist, MANIFEST_NAME), path.resolve(options.dest));
  console.log(`place-dist: ${manifest.name} ${manifest.version} (${manifest.platform}, ` +
    `${manifest.file_count} files) placed in ${target}`);
}

main(process.argv.slice(2)).catch((error) => {
  if (error instanceof UsageError || error instanceof CheckFailed) {
    console.error(`place-dist: ${error.message}`);
    process.exit(error instanceof UsageError ? 2 : 1);
  }
  console.error(`place-dist: ${error.stack || error}`);
  process.exit(1);
});
