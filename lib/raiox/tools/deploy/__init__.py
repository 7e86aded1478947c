"""Deployment to DigitalOcean: the manifest, the env file as the deployer reads it, the build and the checks."""
