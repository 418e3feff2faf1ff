// Parquet corpora through Apache Arrow's C++ library (the pyarrow wheel's libarrow and
// libparquet, which scripts/install-deps.sh unpacks into deps/arrow; Debian 12 has none).
#include <arrow/api.h>
#include <arrow/io/file.h>
#include <parquet/arrow/reader.h>
#include <parquet/file_reader.h>
#include <parquet/metadata.h>

#include <fmt/format.h>

#include "data/readers.h"

namespace moe::data {
namespace {
// The text of row i of a string column chunk (string, large_string or string_view).
template <class Array>
void take(const arrow::Array& chunk, const std::string& where, std::int64_t& row, const DocumentSink& sink,
          BadInput& bad) {
  const auto& a = static_cast<const Array&>(chunk);
  for (std::int64_t i = 0; i < a.length(); ++i, ++row) {
    ++bad.records;
    if (a.IsNull(i)) bad.add(fmt::format("{} row {}: the text is null", where, row));
    else sink(std::string(a.GetView(i)));
  }
}
}  // namespace

bool parquet_supported() { return true; }

void parquet_documents(const std::filesystem::path& file, const std::string& field, const DocumentSink& sink,
                       BadInput& bad) {
  const std::string name = file.string();
  const auto opened = arrow::io::ReadableFile::Open(name);
  auto reader = opened.ok() ? parquet::arrow::OpenFile(*opened, arrow::default_memory_pool())
                            : arrow::Result<std::unique_ptr<parquet::arrow::FileReader>>(opened.status());
  if (!reader.ok()) {  // no footer (truncated) or not Parquet: the whole file is one bad record
    ++bad.records;
    return bad.add(fmt::format("{}: not a readable Parquet file ({})", name, reader.status().message()));
  }
  std::shared_ptr<arrow::Schema> schema;
  const int column = (*reader)->GetSchema(&schema).ok() ? schema->GetFieldIndex(field) : -1;
  if (column < 0) {
    ++bad.records;
    return bad.add(fmt::format("{}: no column '{}' (data.text_field)", name, field));
  }
  const auto meta = (*reader)->parquet_reader()->metadata();
  std::int64_t row = 0;
  for (int g = 0; g < (*reader)->num_row_groups(); ++g) {  // one row group in memory at a time
    const std::int64_t rows = meta->RowGroup(g)->num_rows();
    const std::string where = fmt::format("{} (row group {})", name, g);
    auto table = (*reader)->ReadRowGroup(g, {column});
    if (!table.ok()) {  // a damaged page: the group's rows are lost, counted as one bad record each
      bad.records += rows, bad.bad += rows - 1, row += rows;
      bad.add(fmt::format("{}: {}", where, table.status().message()));
      continue;
    }
    for (const auto& chunk : (*table)->column(0)->chunks()) {
      switch (chunk->type_id()) {
        case arrow::Type::STRING: take<arrow::StringArray>(*chunk, name, row, sink, bad); break;
        case arrow::Type::LARGE_STRING: take<arrow::LargeStringArray>(*chunk, name, row, sink, bad); break;
        case arrow::Type::STRING_VIEW: take<arrow::StringViewArray>(*chunk, name, row, sink, bad); break;
        default:
          bad.records += chunk->length(), row += chunk->length();
          bad.add(fmt::format("{}: column '{}' holds {}, not text", where, field, chunk->type()->ToString()));
      }
    }
  }
}

}  // namespace moe::data
