"""Maps of image collections: reduction, layout, PNG renderer and interactive HTML viewer."""
