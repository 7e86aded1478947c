"""Names vulture (`make test`, [tool.vulture] in pyproject.toml) cannot see being used, each with why it is.

Not a test module and never imported: vulture reads it as more code that uses these names. Vulture matches by name
alone, so an entry covers that name everywhere; `_.name` stands for an attribute of any object. Keep an entry only
while something outside Python's own calls uses the name; delete code that nothing uses instead of listing it here.
"""

# ruff: noqa: B018, F821

# pydantic reads `model_config` from the class body (models, settings, request bodies).
model_config

# pydantic-settings calls this hook on the settings class; its parameters are pydantic-settings' signature.
settings_customise_sources
settings_cls
dotenv_settings
env_settings
file_secret_settings

# Callback signatures fixed by their caller: pydicom's read_dataset(stop_when=(tag, vr, length)), signal handlers
# (signum, frame).
vr
signum

# Fields that are data: read by pydantic/dataclasses (validation, model_dump, asdict, a report's __dict__) into JSON
# answers, job results and reports, or filled from database rows, never by name in Python.
_.deleted_at_jotform  # EraseReport: the erase job's report counters (JobReport.add sets them by outcome name)
_.duplicates  # InboxReport: in the sweep's report (asdict)
_.lost  # JobReport: in every job run's report
_.reference_image_id  # Candidate: in the match answer and stored with each finding's ranking
_.reference_storage_key  # Candidate: the reviewer's reference image (hidden from the public answer)
_.applied_at  # AppliedMigration: a row of schema_migrations
_.updated_at  # Case: a row of cases
_.run_after  # Job: a row of jobs
_.leased_until  # Job: a row of jobs
_.diameter_min_mm  # ManifestRow: a catalog column, validated (and checked in pairs by getattr in _ranges)
_.diameter_max_mm
_.length_min_mm
_.length_max_mm

# torch calls nn.Module.forward through Module.__call__.
_.forward

# http.server / socketserver hooks and switches, called or read by the standard library (the simulator, the dev
# server's access log, the tests' fake servers).
_.do_GET
_.do_POST
_.do_DELETE
_.log_message
_.log_request
_.daemon_threads
_.request_queue_size
_.close_connection

# cog runs these from the [[[cog ]]] blocks of docs/settings.md and docs/cli.md (`make docs`, `cog --check`).
settings_markdown
cli_markdown

# DICOM elements set on pydicom datasets: they are written into the synthetic files (benchmark bombs, test films).
_.SOPClassUID
_.SOPInstanceUID
_.Modality
_.PhotometricInterpretation
_.SamplesPerPixel
_.BitsAllocated
_.BitsStored
_.HighBit
_.PixelRepresentation
_.NumberOfFrames
_.LUTDescriptor
_.LUTData
_.VR
_.is_implicit_VR
_.is_little_endian
