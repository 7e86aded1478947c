// Validates Kubernetes manifests offline against the JSON schemas of kubernetes-models (Kubernetes' own API),
// @kubernetes-models/knative (generated from Knative Serving's API types) and @kubernetes-models/cert-manager.
// Usage: node validate.mjs FILE...   Prints one JSON array, one entry per document; exits 1 when any is invalid
// or has no schema here. kubeconform (a Go binary) cannot be installed from the registries this project uses.
import { readFileSync } from "node:fs";
import { parseAllDocuments } from "yaml";

const packageFor = (group) => {
  if (!group) return "kubernetes-models";
  if (group.endsWith("knative.dev")) return "@kubernetes-models/knative";
  if (group === "cert-manager.io" || group === "acme.cert-manager.io") return "@kubernetes-models/cert-manager";
  if (!group.includes(".") || group.endsWith(".k8s.io")) return "kubernetes-models";
  return null;
};

const results = [];
for (const file of process.argv.slice(2)) {
  const documents = parseAllDocuments(readFileSync(file, "utf8"));
  for (const [index, document] of documents.entries()) {
    const entry = { file, index };
    results.push(entry);
    if (document.errors.length) { entry.error = `YAML: ${document.errors[0].message}`; continue; }
    const object = document.toJS();
    if (object === null) { entry.error = "empty document"; continue; }
    const [group, version] = String(object.apiVersion ?? "").includes("/") ? object.apiVersion.split("/")
      : ["", object.apiVersion];
    Object.assign(entry, { apiVersion: object.apiVersion, kind: object.kind, name: object.metadata?.name });
    const pkg = packageFor(group);
    if (!pkg || !version || !object.kind) { entry.error = `no schema here for ${object.apiVersion} ${object.kind}`; continue; }
    const path = group ? `${pkg}/${group}/${version}/${object.kind}` : `${pkg}/${version}/${object.kind}`;
    let Model;
    try {
      Model = (await import(path))[object.kind];
    } catch {
      entry.error = `no schema here for ${object.apiVersion} ${object.kind}`;
      continue;
    }
    try {
      new Model(object).validate();
      entry.valid = true;
    } catch (error) {
      entry.error = String(error.message ?? error);
    }
  }
}
console.log(JSON.stringify(results, null, 1));
process.exit(results.every((entry) => entry.valid) ? 0 : 1);
