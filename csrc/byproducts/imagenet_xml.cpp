// Strict parser for the ImageNet-AB XML dialect; see imagenet_xml.hpp for the accepted subset and
// luab_fast/byproducts/_imagenet_xml.py for the value rules it shares with the reference parser.
#include "byproducts/imagenet_xml.hpp"

#include <charconv>
#include <cmath>
#include <cstring>
#include <stdexcept>

#include "common/check.hpp"

namespace luab::byproducts {
namespace {

using sv = std::string_view;

constexpr int kMaxDepth = 4096;  // deeper ignored subtrees are refused (the reference still reads them)

inline bool is_ws(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }
inline bool name_start(char c) { return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_'; }
inline bool name_char(char c) { return name_start(c) || (c >= '0' && c <= '9') || c == '.' || c == '-'; }

sv strip(sv s) {
  while (!s.empty() && is_ws(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_ws(s.back())) s.remove_suffix(1);
  return s;
}

// Whole-document screen: printable ASCII + \t \n \r, no '&' (references), no "]]>". Branch-free over
// 64-byte blocks so the compiler vectorises it; the slow loop only runs to name the bad byte.
void screen(sv doc) {
  const auto* u = reinterpret_cast<const unsigned char*>(doc.data());
  const size_t n = doc.size();
  auto bad = [](unsigned char c) -> unsigned {
    return ((c < 0x20) & (c != '\t') & (c != '\n') & (c != '\r')) | (c >= 0x7f) | (c == '&');
  };
  unsigned any = 0;
  size_t i = 0;
  for (; i + 64 <= n && !any; i += 64)
    for (size_t k = 0; k < 64; ++k) any |= bad(u[i + k]);
  for (; i < n; ++i) any |= bad(u[i]);
  if (any)
    for (i = 0; i < n; ++i) LUAB_CHECK(!bad(u[i]), "byte ", i, ": unsupported character code ", int(u[i]));
  LUAB_CHECK(doc.find("]]>") == sv::npos, "unsupported ']]>'");
}

int64_t to_int(sv text, sv what, bool nonneg) {
  const sv s = strip(text);
  size_t i = 0;
  bool neg = false;
  if (i < s.size() && (s[i] == '+' || s[i] == '-')) neg = s[i++] == '-';
  LUAB_CHECK(i < s.size(), what, ": not an integer");
  const uint64_t limit = neg ? (uint64_t{1} << 63) : (uint64_t{1} << 63) - 1;
  uint64_t v = 0;
  for (; i < s.size(); ++i) {
    LUAB_CHECK(s[i] >= '0' && s[i] <= '9', what, ": not an integer");
    const uint64_t d = static_cast<uint64_t>(s[i] - '0');
    LUAB_CHECK(v <= (limit - d) / 10, what, ": does not fit in int64");
    v = v * 10 + d;
  }
  LUAB_CHECK(!(nonneg && neg && v != 0), what, ": negative");
  return neg ? static_cast<int64_t>(0 - v) : static_cast<int64_t>(v);
}

constexpr double kPow10[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,  1e8,  1e9,  1e10, 1e11,
                              1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

float to_f32(sv text, sv what) {
  sv s = strip(text);
  // [+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?
  size_t i = 0, digits = 0, frac = 0;
  uint64_t m = 0;  // all digits as one integer while it stays exact in a double
  bool exact = true;
  auto digit = [&](char c) {
    ++digits;
    if (m >= (uint64_t{1} << 53) / 10) exact = false;
    m = m * 10 + static_cast<uint64_t>(c - '0');
  };
  if (i < s.size() && (s[i] == '+' || s[i] == '-')) ++i;
  const size_t body = i;
  for (; i < s.size() && s[i] >= '0' && s[i] <= '9'; ++i) digit(s[i]);
  if (i < s.size() && s[i] == '.') {
    for (++i; i < s.size() && s[i] >= '0' && s[i] <= '9'; ++i) digit(s[i]), ++frac;
  }
  LUAB_CHECK(digits > 0, what, ": not a number");
  if (i < s.size() && (s[i] == 'e' || s[i] == 'E')) {
    exact = false;
    ++i;
    if (i < s.size() && (s[i] == '+' || s[i] == '-')) ++i;
    size_t exp_digits = 0;
    while (i < s.size() && s[i] >= '0' && s[i] <= '9') ++i, ++exp_digits;
    LUAB_CHECK(exp_digits > 0, what, ": not a number");
  }
  LUAB_CHECK(i == s.size(), what, ": not a number");
  const bool neg = s[0] == '-';
  double d = 0.0;
  if (exact && frac <= 22) {
    // Clinger's fast path: m and 10^frac are exact doubles, so one IEEE division rounds correctly
    d = static_cast<double>(m) / kPow10[frac];
  } else {
    const auto r = std::from_chars(s.data() + body, s.data() + s.size(), d, std::chars_format::general);
    LUAB_CHECK(r.ec == std::errc() && r.ptr == s.data() + s.size(), what, ": out of range");
  }
  const float f = static_cast<float>(neg ? -d : d);  // double first, then float32: as the reference
  LUAB_CHECK(std::isfinite(f), what, ": not finite as float32");
  return f;
}

sv checked_str(sv text, sv what) {
  const sv s = strip(text);
  LUAB_CHECK(s.find('\r') == sv::npos, what, ": carriage return in text");  // XML would normalise it
  return s;
}

struct Tag {
  sv name;
  bool empty;  // <name/>
};

class Parser {
 public:
  explicit Parser(sv doc) : begin_(doc.data()), p_(doc.data()), end_(doc.data() + doc.size()) {}

  // Prolog, root element, trailing whitespace. Calls on_root(tag) positioned after the root start tag.
  template <class F>
  void document(F&& on_root) {
    if (rest().substr(0, 5) == "<?xml" && end_ - p_ > 5 && is_ws(p_[5])) xml_decl();
    skip_ws();
    LUAB_CHECK(p_ < end_, "no root element");
    LUAB_CHECK(*p_ == '<' && p_ + 1 < end_ && name_start(p_[1]), at(), "expected the root element");
    on_root(open_tag());
    skip_ws();
    LUAB_CHECK(p_ == end_, at(), "content after the root element");
  }

  // Content of element `name` up to and including its end tag. `text` (if given) gets the character
  // data before the first child; on_child(tag) must consume each child element.
  template <class F>
  void content(sv name, sv* text, F&& on_child) {
    bool first = true;
    for (;;) {
      const char* lt = static_cast<const char*>(std::memchr(p_, '<', static_cast<size_t>(end_ - p_)));
      LUAB_CHECK(lt != nullptr, "unexpected end of document inside <", name, ">");
      if (first && text) *text = sv(p_, static_cast<size_t>(lt - p_));
      first = false;
      p_ = lt;
      if (peek(1) == '/') {
        close_tag(name);
        return;
      }
      on_child(open_tag());
    }
  }

  sv leaf(const Tag& t) {
    sv text;
    if (!t.empty) content(t.name, &text, [this](const Tag& c) { skip(c); });
    return text;
  }

  void skip(const Tag& t) {
    if (t.empty) return;
    std::vector<sv> stack{t.name};
    while (!stack.empty()) {
      const char* lt = static_cast<const char*>(std::memchr(p_, '<', static_cast<size_t>(end_ - p_)));
      LUAB_CHECK(lt != nullptr, "unexpected end of document inside <", stack.back(), ">");
      p_ = lt;
      if (peek(1) == '/') {
        close_tag(stack.back());
        stack.pop_back();
      } else {
        const Tag c = open_tag();
        if (!c.empty) stack.push_back(c.name);
        LUAB_CHECK(stack.size() < kMaxDepth, "elements nested too deep");
      }
    }
  }

 private:
  const char* begin_;
  const char* p_;
  const char* end_;

  sv rest() const { return sv(p_, static_cast<size_t>(end_ - p_)); }
  char peek(ptrdiff_t k = 0) const { return p_ + k < end_ ? p_[k] : '\0'; }  // '\0' never in a screened doc
  std::string at() const { return "byte " + std::to_string(p_ - begin_) + ": "; }
  bool skip_ws() {
    const char* s = p_;
    while (p_ < end_ && is_ws(*p_)) ++p_;
    return p_ != s;
  }
  sv name() {
    LUAB_CHECK(name_start(peek()), at(), "expected a name");
    const char* s = p_;
    while (p_ < end_ && name_char(*p_)) ++p_;
    LUAB_CHECK(peek() != ':', at(), "unsupported namespace prefix");
    return sv(s, static_cast<size_t>(p_ - s));
  }
  sv quoted() {
    const char q = peek();
    LUAB_CHECK(q == '"' || q == '\'', at(), "expected a quoted value");
    const char* s = ++p_;
    while (p_ < end_ && *p_ != q) {
      LUAB_CHECK(*p_ != '<', at(), "'<' in an attribute value");
      ++p_;
    }
    LUAB_CHECK(p_ < end_, "unterminated attribute value");
    return sv(s, static_cast<size_t>(p_++ - s));
  }

  // p_ at '<' of a start tag.
  Tag open_tag() {
    ++p_;
    LUAB_CHECK(peek() != '!' && peek() != '?', at(), "unsupported comment / CDATA / declaration / PI");
    const sv tag = name();
    if (peek() == '>') {  // the common case: no attributes
      ++p_;
      return {tag, false};
    }
    return {tag, attributes()};
  }

  // After a tag name: attributes (checked, ignored) up to '>' or '/>'; returns whether it was '/>'.
  bool attributes() {
    sv attrs[16];
    int n_attrs = 0;
    for (;;) {
      const bool ws = skip_ws();
      if (peek() == '>') {
        ++p_;
        return false;
      }
      if (peek() == '/') {
        LUAB_CHECK(peek(1) == '>', at(), "expected '/>'");
        p_ += 2;
        return true;
      }
      LUAB_CHECK(ws, at(), "expected whitespace before an attribute");
      const sv attr = name();
      LUAB_CHECK(attr != "xmlns", at(), "unsupported namespace declaration");
      for (int k = 0; k < n_attrs; ++k) LUAB_CHECK(attrs[k] != attr, at(), "duplicate attribute ", attr);
      LUAB_CHECK(n_attrs < 16, at(), "too many attributes");
      attrs[n_attrs++] = attr;
      skip_ws();
      LUAB_CHECK(peek() == '=', at(), "expected '='");
      ++p_;
      skip_ws();
      quoted();
    }
  }

  // p_ at "</".
  void close_tag(sv expected) {
    p_ += 2;
    const size_t n = expected.size();
    if (static_cast<size_t>(end_ - p_) > n && std::memcmp(p_, expected.data(), n) == 0 && !name_char(p_[n]) &&
        p_[n] != ':') {
      p_ += n;
    } else {
      const sv got = name();
      LUAB_CHECK(got == expected, at(), "</", got, "> closes <", expected, ">");
    }
    skip_ws();
    LUAB_CHECK(peek() == '>', at(), "expected '>'");
    ++p_;
  }

  // <?xml version="1.0" [encoding="utf-8"|"us-ascii"] [standalone="yes"|"no"] ?>
  void xml_decl() {
    p_ += 5;
    const char* names[3] = {"version", "encoding", "standalone"};
    int next = 0;
    for (;;) {
      const bool ws = skip_ws();
      if (peek() == '?') {
        LUAB_CHECK(peek(1) == '>' && next > 0, at(), "bad XML declaration");
        p_ += 2;
        return;
      }
      LUAB_CHECK(ws, at(), "bad XML declaration");
      const sv key = name();
      int idx = 0;
      while (idx < 3 && key != names[idx]) ++idx;
      LUAB_CHECK(idx < 3 && idx >= next && (next > 0 || idx == 0), at(), "unsupported XML declaration");
      skip_ws();
      LUAB_CHECK(peek() == '=', at(), "bad XML declaration");
      ++p_;
      skip_ws();
      std::string v(quoted());
      if (idx == 1)  // encoding names are case-insensitive
        for (char& c : v) c = static_cast<char>(c >= 'A' && c <= 'Z' ? c + 32 : c);
      const bool ok = idx == 0 ? v == "1.0" : idx == 1 ? (v == "utf-8" || v == "us-ascii") : (v == "yes" || v == "no");
      LUAB_CHECK(ok, at(), "unsupported XML declaration value");
      next = idx + 1;
    }
  }
};

// The field tables of the reference (RECORD_STR, RECORD_INT), by tag.
struct Field {
  sv tag;
  int kind;  // 0 str, 1 int, 2 int >= 0
  int col;
};
constexpr Field kRecordFields[] = {
    {"worker_id", 0, 0}, {"assignment_id", 0, 1}, {"hit_id", 0, 2}, {"imageID", 0, 3},
    {"page_idx", 2, kPageIdx}, {"selectedCount", 2, kSelectedCount}, {"hoveredCount", 2, kHoveredCount},
    {"estimateTime", 1, kEstimateTime}, {"imageWidth", 2, kImageWidth}, {"imageHeight", 2, kImageHeight},
    {"originalImageWidth", 2, kOriginalWidth}, {"originalImageHeight", 2, kOriginalHeight},
};
constexpr int kNumRecordFields = sizeof(kRecordFields) / sizeof(kRecordFields[0]);

// Children of an element, first occurrence of each named tag (Element.find); others skipped.
template <int N>
void first_children(Parser& ps, const Tag& t, const sv (&tags)[N], sv (&text)[N], bool (&seen)[N]) {
  for (int k = 0; k < N; ++k) seen[k] = false;
  if (t.empty) return;
  ps.content(t.name, nullptr, [&](const Tag& c) {
    for (int k = 0; k < N; ++k) {
      if (!seen[k] && c.name == tags[k]) {
        text[k] = ps.leaf(c);
        seen[k] = true;
        return;
      }
    }
    ps.skip(c);
  });
}

// <selectedRecord> / <mouseTracking>: x, y, time, all required.
void xy_event(Parser& ps, const Tag& t, std::vector<float>& xy, std::vector<int64_t>& times) {
  static constexpr sv tags[3] = {"x", "y", "time"};
  sv text[3];
  bool seen[3];
  first_children(ps, t, tags, text, seen);
  LUAB_CHECK(seen[0] && seen[1] && seen[2], "<", t.name, "> lacks x, y or time");
  xy.push_back(to_f32(text[0], "x"));
  xy.push_back(to_f32(text[1], "y"));
  times.push_back(to_int(text[2], "time", false));
}

void metadata(Parser& ps, const Tag& t, ImageNetDocOut& d) {
  ImageNetRecordOut r;
  for (int64_t& v : r.ints) v = 0;
  r.ints[kPageIdx] = -1;
  bool seen[kNumRecordFields] = {};
  bool seen_selected = false, seen_position = false;
  if (!t.empty) {
    ps.content(t.name, nullptr, [&](const Tag& c) {
      const sv n = c.name;
      if (n == "mouseTracking") {
        xy_event(ps, c, d.trace_xy, d.trace_t);
        ++r.n_trace;
      } else if (n == "selectedRecord") {
        xy_event(ps, c, d.click_xy, d.click_t);
        ++r.n_click;
      } else if (n == "hoveredRecord") {
        static constexpr sv tags[2] = {"action", "time"};
        sv text[2];
        bool got[2];
        first_children(ps, c, tags, text, got);
        LUAB_CHECK(got[0] && got[1], "<hoveredRecord> lacks action or time");
        const sv a = strip(text[0]);
        LUAB_CHECK(a == "enter" || a == "leave", "hoveredRecord/action: neither enter nor leave");
        d.hover_enter.push_back(a == "enter");
        d.hover_t.push_back(to_int(text[1], "hoveredRecord/time", false));
        ++r.n_hover;
      } else if (n == "selected" && !seen_selected) {
        const sv s = strip(ps.leaf(c));
        LUAB_CHECK(s == "True" || s == "False", "selected: neither True nor False");
        r.ints[kSelected] = s == "True";
        seen_selected = true;
      } else if (n == "imagePosition" && !seen_position) {
        static constexpr sv tags[2] = {"x", "y"};
        sv text[2];
        bool got[2];
        first_children(ps, c, tags, text, got);
        LUAB_CHECK(got[0] && got[1], "<imagePosition> lacks x or y");
        r.ints[kPosX] = to_int(text[0], "imagePosition/x", false);
        r.ints[kPosY] = to_int(text[1], "imagePosition/y", false);
        seen_position = true;
      } else {
        for (int k = 0; k < kNumRecordFields; ++k) {
          const Field& f = kRecordFields[k];
          if (!seen[k] && n == f.tag) {
            seen[k] = true;
            const sv text = ps.leaf(c);
            if (f.kind == 0) {
              r.str[f.col] = checked_str(text, f.tag);
            } else {
              r.ints[f.col] = to_int(text, f.tag, f.kind == 2);
            }
            return;
          }
        }
        ps.skip(c);
      }
    });
  }
  d.recs.push_back(r);
}

void object(Parser& ps, const Tag& t, ImageNetDocOut& d) {
  sv name;
  bool seen_name = false, seen_box = false;
  if (!t.empty) {
    ps.content(t.name, nullptr, [&](const Tag& c) {
      if (c.name == "name" && !seen_name) {
        name = checked_str(ps.leaf(c), "object/name");
        seen_name = true;
      } else if (c.name == "bndbox" && !seen_box) {
        static constexpr sv tags[4] = {"xmin", "ymin", "xmax", "ymax"};
        sv text[4];
        bool got[4];
        first_children(ps, c, tags, text, got);
        for (int k = 0; k < 4; ++k) LUAB_CHECK(got[k], "<bndbox> lacks ", tags[k]);
        for (int k = 0; k < 4; ++k) d.boxes.push_back(to_f32(text[k], tags[k]));
        seen_box = true;
      } else {
        ps.skip(c);
      }
    });
  }
  LUAB_CHECK(seen_box, "<object> has no <bndbox>");
  d.box_names.push_back(name);
}

}  // namespace

void parse_imagenet_doc(std::string_view doc, ImageNetDocOut& d) {
  d = ImageNetDocOut();
  screen(doc);
  Parser ps(doc);
  ps.document([&](const Tag& root) {
    LUAB_CHECK(root.name == "annotation", "root element is <", root.name, ">");
    bool seen_filename = false, seen_folder = false, seen_size = false;
    if (root.empty) return;
    ps.content(root.name, nullptr, [&](const Tag& c) {
      if (c.name == "metadata") {
        metadata(ps, c, d);
      } else if (c.name == "object") {
        object(ps, c, d);
      } else if (c.name == "filename" && !seen_filename) {
        d.filename = checked_str(ps.leaf(c), "filename");
        seen_filename = true;
      } else if (c.name == "folder" && !seen_folder) {
        d.folder = checked_str(ps.leaf(c), "folder");
        seen_folder = true;
      } else if (c.name == "size" && !seen_size) {
        static constexpr sv tags[3] = {"width", "height", "depth"};
        sv text[3];
        bool got[3];
        first_children(ps, c, tags, text, got);
        for (int k = 0; k < 3; ++k)
          if (got[k]) d.size[k] = to_int(text[k], tags[k], true);
        seen_size = true;
      } else {
        ps.skip(c);
      }
    });
  });
}

}  // namespace luab::byproducts
