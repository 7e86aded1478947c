-- Sizes for the reviewer's measurements: the diameters and lengths an implant system is sold in (optional,
-- from the catalog manifest), and an X-ray's pixel spacing when its file says it (DICOM), so a ruler on the
-- film can read millimetres and the candidates whose sizes disagree can be marked.

ALTER TABLE implants
    ADD COLUMN diameter_min_mm real,
    ADD COLUMN diameter_max_mm real,
    ADD COLUMN length_min_mm   real,
    ADD COLUMN length_max_mm   real,
    ADD CONSTRAINT implants_diameter_range CHECK (
        (diameter_min_mm IS NULL) = (diameter_max_mm IS NULL)
        AND diameter_min_mm > 0 AND diameter_min_mm <= diameter_max_mm),
    ADD CONSTRAINT implants_length_range CHECK (
        (length_min_mm IS NULL) = (length_max_mm IS NULL)
        AND length_min_mm > 0 AND length_min_mm <= length_max_mm);

-- Millimetres between the centres of adjacent rows and of adjacent columns (DICOM PixelSpacing's order).
ALTER TABLE case_images
    ADD COLUMN pixel_spacing_row_mm real,
    ADD COLUMN pixel_spacing_col_mm real,
    ADD CONSTRAINT case_images_pixel_spacing CHECK (
        (pixel_spacing_row_mm IS NULL) = (pixel_spacing_col_mm IS NULL)
        AND pixel_spacing_row_mm > 0 AND pixel_spacing_col_mm > 0);
