// A RocksDB file system that fails every write with NoSpace while full() is
// set, as a full disk does; everything else goes to the real file system.
// Built on RocksDB's public FileSystemWrapper, handed to the store through
// store::Options::env (or server::TestHooks::store_env).
// Thread-safety: set_full may be called while RocksDB runs.
#pragma once

#include <rocksdb/env.h>
#include <rocksdb/file_system.h>

#include <atomic>
#include <memory>
#include <string>

namespace orchard::testing {

class FullDiskFs : public rocksdb::FileSystemWrapper {
 public:
  FullDiskFs() : rocksdb::FileSystemWrapper(rocksdb::FileSystem::Default()) {}
  const char* Name() const override { return "FullDiskFs"; }

  void set_full(bool full) { full_->store(full); }
  // Writes refused so far.
  uint64_t refused() const { return refused_->load(); }

  rocksdb::IOStatus NewWritableFile(const std::string& name, const rocksdb::FileOptions& options,
                                    std::unique_ptr<rocksdb::FSWritableFile>* result,
                                    rocksdb::IODebugContext* dbg) override {
    return Wrap(target()->NewWritableFile(name, options, result, dbg), result);
  }
  rocksdb::IOStatus ReopenWritableFile(const std::string& name, const rocksdb::FileOptions& options,
                                       std::unique_ptr<rocksdb::FSWritableFile>* result,
                                       rocksdb::IODebugContext* dbg) override {
    return Wrap(target()->ReopenWritableFile(name, options, result, dbg), result);
  }

 private:
  class File : public rocksdb::FSWritableFileOwnerWrapper {
   public:
    File(std::unique_ptr<rocksdb::FSWritableFile> base, std::shared_ptr<std::atomic<bool>> full,
         std::shared_ptr<std::atomic<uint64_t>> refused)
        : rocksdb::FSWritableFileOwnerWrapper(std::move(base)),
          full_(std::move(full)),
          refused_(std::move(refused)) {}
    rocksdb::IOStatus Append(const rocksdb::Slice& data, const rocksdb::IOOptions& options,
                             rocksdb::IODebugContext* dbg) override {
      if (Full()) return NoSpace();
      return FSWritableFileOwnerWrapper::Append(data, options, dbg);
    }
    rocksdb::IOStatus Append(const rocksdb::Slice& data, const rocksdb::IOOptions& options,
                             const rocksdb::DataVerificationInfo& info,
                             rocksdb::IODebugContext* dbg) override {
      if (Full()) return NoSpace();
      return FSWritableFileOwnerWrapper::Append(data, options, info, dbg);
    }
    rocksdb::IOStatus PositionedAppend(const rocksdb::Slice& data, uint64_t offset,
                                       const rocksdb::IOOptions& options,
                                       rocksdb::IODebugContext* dbg) override {
      if (Full()) return NoSpace();
      return FSWritableFileOwnerWrapper::PositionedAppend(data, offset, options, dbg);
    }
    rocksdb::IOStatus PositionedAppend(const rocksdb::Slice& data, uint64_t offset,
                                       const rocksdb::IOOptions& options,
                                       const rocksdb::DataVerificationInfo& info,
                                       rocksdb::IODebugContext* dbg) override {
      if (Full()) return NoSpace();
      return FSWritableFileOwnerWrapper::PositionedAppend(data, offset, options, info, dbg);
    }

   private:
    bool Full() const { return full_->load(); }
    rocksdb::IOStatus NoSpace() {
      refused_->fetch_add(1);
      return rocksdb::IOStatus::NoSpace("injected by FullDiskFs");
    }
    std::shared_ptr<std::atomic<bool>> full_;
    std::shared_ptr<std::atomic<uint64_t>> refused_;
  };

  rocksdb::IOStatus Wrap(rocksdb::IOStatus s, std::unique_ptr<rocksdb::FSWritableFile>* result) {
    if (s.ok()) result->reset(new File(std::move(*result), full_, refused_));
    return s;
  }

  // Shared with the files, which may outlive a reference to this object held elsewhere.
  std::shared_ptr<std::atomic<bool>> full_ = std::make_shared<std::atomic<bool>>(false);
  std::shared_ptr<std::atomic<uint64_t>> refused_ = std::make_shared<std::atomic<uint64_t>>(0);
};

// The file system and the Env that runs RocksDB on it (keep both alive while
// the store is open).
struct FullDiskEnv {
  std::shared_ptr<FullDiskFs> fs = std::make_shared<FullDiskFs>();
  std::unique_ptr<rocksdb::Env> env = rocksdb::NewCompositeEnv(fs);
};

}  // namespace orchard::testing
